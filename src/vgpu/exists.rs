//! Whether a vGPU type an admin names exists at all: a type no GPU here
//! offers and NVIDIA's table for its model does not list is refused with the
//! closest name ("did you mean"), before anything is explained, planned or
//! created as if it existed.

use super::typename::VgpuTypeName;
use super::view::GpuView;
use crate::nvidia::known;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no vGPU type {name}{}{}", suggestion.as_ref().map(|s| format!(": did you mean {s}?")).unwrap_or_default(), listed(offered))]
pub struct UnknownType {
    pub name: String,
    pub suggestion: Option<String>,
    /// The types of the same model that do exist (the host's, else NVIDIA's table).
    pub offered: Vec<String>,
}

fn listed(offered: &[String]) -> String {
    if offered.is_empty() {
        String::new()
    } else {
        format!(" (types of this model: {})", offered.join(", "))
    }
}

/// Every type name the host's GPUs list, then NVIDIA's tables, without repeats.
fn candidates(views: &[GpuView]) -> Vec<String> {
    let mut names: Vec<String> = views.iter().flat_map(|v| v.types.iter().map(|t| t.name.clone())).collect();
    for model in known::MODELS {
        for t in known::catalog(model).unwrap_or_default() {
            names.push(format!("{model}-{}", t.suffix));
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_uppercase()));
    names
}

/// `Ok` when `t` exists: a GPU here lists it, or NVIDIA's table for its
/// model does. A model vgpuctl has no table for and no GPU here offers is
/// taken on trust unless its name is a near miss of a known one.
pub fn check(views: &[GpuView], t: &VgpuTypeName) -> Result<(), UnknownType> {
    let name = t.to_string();
    let all = candidates(views);
    if all.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
        return Ok(());
    }
    let of_model =
        |model: &str| -> Vec<String> { all.iter().filter(|n| n.split('-').next().is_some_and(|m| m.eq_ignore_ascii_case(model))).cloned().collect() };
    let same_model = of_model(&t.model);
    let closest = crate::nvidia::near_miss(all.iter().map(String::as_str), &name).map(str::to_string);
    // A model with a known list of types (NVIDIA's table, or GPUs here) is
    // complete: anything else of that model does not exist.
    if !same_model.is_empty() || closest.is_some() {
        // A misspelt model: list the types of the model meant.
        let offered = match (&closest, same_model.is_empty()) {
            (Some(c), true) => of_model(c.split('-').next().unwrap_or_default()),
            _ => same_model,
        };
        return Err(UnknownType { name, suggestion: closest, offered });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(n: &str) -> Result<(), UnknownType> {
        check(&[], &n.parse().unwrap())
    }

    #[test]
    fn test_near_misses_name_the_type_meant_and_real_types_pass() {
        assert!(check_name("H100-20C").is_ok());
        assert!(check_name("h100-20c").is_ok(), "case does not matter");
        assert!(check_name("H100-3-40C").is_ok());
        let e = check_name("H100-21C").unwrap_err();
        assert_eq!(e.suggestion.as_deref(), Some("H100-20C"));
        assert!(e.to_string().contains("did you mean H100-20C?") && e.to_string().contains("H100-10C"), "{e}");
        assert_eq!(check_name("H10O-20C").unwrap_err().suggestion.as_deref(), Some("H100-20C"));
        // T4 has a table: T4-5Q is not in it, and nothing is close enough to guess.
        let e = check_name("T4-5Q").unwrap_err();
        assert!(e.to_string().starts_with("no vGPU type T4-5Q") && e.to_string().contains("T4-4Q"), "{e}");
        // A model vgpuctl has no table for, and no near miss: taken on trust.
        assert!(check_name("L40S-4Q").is_ok());
    }
}
