//! vgpuctl-libvirt: the part of vgpuctl that talks to libvirtd (define,
//! attach, detach, show). A separate binary because libvirt is a shared
//! library with a long tail of dependencies: the main vgpuctl binary, which
//! every hook call and CLI call starts, stays static and never links it.
//! `vgpuctl vm define|attach|detach|show` runs this program.

use std::process::ExitCode;

use clap::Parser;
use vgpuctl::cli::vm::{render_report, report};
use vgpuctl::cli::vm_libvirt::{Cmd, LibvirtCli as Cli};
use vgpuctl::cli::{doc, print_out};
use vgpuctl::hook;
use vgpuctl::host::Host;
use vgpuctl::libvirt::domain_xml::{self, NAMESPACE};
use vgpuctl::libvirt::generate::{self, DeviceSpec};
use vgpuctl::libvirt::templates::Templates;
use vgpuctl::lock::HostLock;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("libvirt: {0}")]
    Libvirt(String),
    #[error("{0}")]
    Msg(String),
    /// A library error, with the exit code vgpuctl gives it.
    #[error("{msg}")]
    Classified { msg: String, code: u8 },
}

fn lv(context: &str) -> impl Fn(virt::error::Error) -> HelperError + '_ {
    move |e| HelperError::Libvirt(format!("{context}: {}", e.message()))
}

fn any_err(e: &(dyn std::error::Error + 'static)) -> HelperError {
    let code = u8::try_from(vgpuctl::cli::exit_code::of(e)).unwrap_or(1);
    HelperError::Classified { msg: vgpuctl::error_chain(e), code }
}

fn flags(live: bool, config: bool) -> u32 {
    let mut f = sys::VIR_DOMAIN_AFFECT_CURRENT;
    if live {
        f |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    if config {
        f |= sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    f
}

/// libvirt wants metadata as an unprefixed fragment; it adds the key as prefix.
fn metadata_fragment(t: &Templates, devices: &[DeviceSpec]) -> Result<String, HelperError> {
    let with_ns = generate::metadata(t, devices).map_err(|e| any_err(&e))?;
    Ok(with_ns.replace(&format!(" xmlns:vgpuctl='{NAMESPACE}'"), "").replace("vgpuctl:", ""))
}

fn explain_attach_error(msg: &str) -> String {
    let hint = if msg.contains("PCI") && (msg.contains("slot") || msg.contains("hotplug") || msg.contains("hot-plug")) {
        "; the guest has no free hot-pluggable PCI slot (q35 guests need an empty pcie-root-port per hot-plugged device) or does not support hot-plug: attach with --config and restart the VM"
    } else if msg.contains("not support") || msg.contains("unsupported") {
        "; this device cannot be hot-plugged into this guest: attach with --config and restart the VM"
    } else {
        ""
    };
    format!("{msg}{hint}")
}

fn run(cli: Cli) -> Result<(), HelperError> {
    let host = vgpuctl::open_host(cli.root.as_deref()).map_err(|e| any_err(&e))?;
    let uri = cli.cmd.connect();
    let conn = Connect::open(Some(uri)).map_err(lv(&format!("cannot connect to {uri}")))?;
    // virt's Connect panics in Drop when closing fails; the process exits
    // right after, so the kernel closes the socket instead.
    let result = run_with(&host, &conn, &cli.cmd);
    std::mem::forget(conn);
    result
}

fn lookup(conn: &Connect, name: &str) -> Result<Domain, HelperError> {
    conn.lookup_domain_by_name(name).map_err(lv(&format!("no domain {name:?}")))
}

fn run_with(host: &Host, conn: &Connect, cmd: &Cmd) -> Result<(), HelperError> {
    match cmd {
        Cmd::Define { domain, json, .. } => {
            let xml = domain.render(host).map_err(|e| any_err(&e))?;
            let d = conn.define_domain_xml(&xml).map_err(lv("define"))?;
            let uuid = d.uuid_string().unwrap_or_default();
            if *json {
                let d = doc::Versioned::new(doc::VmDefined { name: domain.name.to_string(), uuid, defined: true });
                print_out(&doc::render(&d).unwrap_or_default());
            } else {
                print_out(&format!("defined {} ({uuid})\n", domain.name));
            }
        }
        Cmd::Attach { domain, devices, live, config, json, .. } => {
            if devices.is_empty() {
                return Err(HelperError::Msg("nothing to attach: give --vgpu, --mdev, --mdev-type or --passthrough".into()));
            }
            let dom = lookup(conn, domain)?;
            let active = dom.is_active().map_err(lv("domain state"))?;
            let (live, config) = if !*live && !*config { (active, !active) } else { (*live, *config) };
            if live && !active {
                return Err(HelperError::Msg(format!("{domain} is not running: use --config")));
            }
            let t = Templates::load(vgpuctl::libvirt::templates::find_dir(host, None).as_deref()).map_err(|e| any_err(&e))?;
            let specs = devices.resolve(host).map_err(|e| any_err(&e))?;
            let inactive = dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).map_err(lv("dumpxml"))?;
            let parsed = domain_xml::parse(&inactive).map_err(|e| any_err(&e))?;
            // The domain's own libosinfo id says what the guest can use.
            vgpuctl::libvirt::guest::check(parsed.guest_os(), &devices.vgpu).map_err(|e| HelperError::Msg(format!("{domain}: {e}")))?;
            let uuid = dom.uuid_string().ok();
            for (i, d) in specs.iter().enumerate() {
                // Made exactly as a VM start would make it, journaled for this domain.
                let made =
                    if live { hook::make_live(host, &parsed.name, uuid.as_deref(), &hook::Action::from(d)).map_err(|e| any_err(&e))? } else { Vec::new() };
                let mut failed = None;
                for h in generate::hostdevs(&t, d, 0x18 + i as u8).map_err(|e| any_err(&e))? {
                    if let Err(e) = dom.attach_device_flags(&h, flags(live, config)) {
                        failed = Some(explain_attach_error(e.message()));
                        break;
                    }
                }
                if let Some(msg) = failed {
                    if !made.is_empty() {
                        let _lock = HostLock::acquire(host, hook::LOCK_TIMEOUT).map_err(|e| any_err(&e))?;
                        if let Err(e) = hook::release_one(host, &parsed.name, uuid.as_deref(), &|e| made.contains(e)) {
                            eprintln!("vgpuctl: rollback: {}", vgpuctl::error_chain(&e));
                        }
                    }
                    return Err(HelperError::Libvirt(format!("libvirt refused to attach to {domain}: {msg}")));
                }
            }
            if config {
                let mut all = parsed.requests.clone();
                all.extend(specs.iter().cloned());
                let frag = metadata_fragment(&t, &all)?;
                dom.set_metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(&frag), Some("vgpuctl"), Some(NAMESPACE), sys::VIR_DOMAIN_AFFECT_CONFIG)
                    .map_err(lv("metadata"))?;
            }
            if *json {
                let d = doc::Versioned::new(doc::VmAttached { domain: domain.clone(), devices: specs, live, persistent: config });
                print_out(&doc::render(&d).unwrap_or_default());
            } else {
                print_out(&format!(
                    "attached {} device(s) to {domain}{}{}\n",
                    specs.len(),
                    if live { " (live)" } else { "" },
                    if config { " (persistent)" } else { "" }
                ));
            }
        }
        Cmd::Detach { domain, mdev, pci, live, config, json, .. } => {
            let dom = lookup(conn, domain)?;
            let active = dom.is_active().map_err(lv("domain state"))?;
            let (live, config) = if !*live && !*config { (active, !active) } else { (*live, *config) };
            let xml = dom.xml_desc(if config && !live { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 }).map_err(lv("dumpxml"))?;
            let parsed = domain_xml::parse(&xml).map_err(|e| any_err(&e))?;
            let t = Templates::load(vgpuctl::libvirt::templates::find_dir(host, None).as_deref()).map_err(|e| any_err(&e))?;
            let spec = match (mdev, pci) {
                (Some(u), None) => DeviceSpec::Mdev {
                    uuid: *u,
                    mdev_type: "x".parse().map_err(|e: vgpuctl::ids::IdError| any_err(&e))?,
                    parent: None,
                    display: None,
                    ramfb: None,
                },
                (None, Some(a)) => {
                    let managed = parsed.hostdevs.iter().any(|h| matches!(h, domain_xml::Hostdev::Pci { address, managed: true } if address == a));
                    if managed {
                        DeviceSpec::Passthrough { address: *a, companions: vec![], rom_file: None, rom_bar: None }
                    } else {
                        DeviceSpec::VendorVgpu { vf: *a, type_name: String::new(), policy: Default::default(), gpu: None }
                    }
                }
                _ => return Err(HelperError::Msg("give exactly one of --mdev UUID or --pci ADDRESS".into())),
            };
            let h = generate::hostdevs(&t, &spec, 0).map_err(|e| any_err(&e))?;
            dom.detach_device_flags(&h[0], flags(live, config))
                .map_err(|e| HelperError::Libvirt(format!("libvirt refused to detach from {domain}: {}", e.message())))?;
            let uuid = dom.uuid_string().ok();
            let mut freed = false;
            if live {
                let _lock = HostLock::acquire(host, hook::LOCK_TIMEOUT).map_err(|e| any_err(&e))?;
                freed = hook::release_one(host, &parsed.name, uuid.as_deref(), &hook::made_for(host, &spec)).map_err(|e| any_err(&e))?;
                if freed && !*json {
                    print_out(&format!("freed the device vgpuctl made for {domain}\n"));
                }
            }
            if config {
                // The one model: a request is the detached device when it puts the same hostdev in.
                let remaining: Vec<DeviceSpec> = parsed.requests.iter().filter(|r| !r.hostdev().same_device(&spec.hostdev())).cloned().collect();
                let frag = metadata_fragment(&t, &remaining)?;
                dom.set_metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(&frag), Some("vgpuctl"), Some(NAMESPACE), sys::VIR_DOMAIN_AFFECT_CONFIG)
                    .map_err(lv("metadata"))?;
            }
            if *json {
                let d = doc::Versioned::new(doc::VmDetached { domain: domain.clone(), live, persistent: config, freed });
                print_out(&doc::render(&d).unwrap_or_default());
            } else {
                print_out(&format!("detached from {domain}\n"));
            }
        }
        Cmd::Show { domain, inactive, json, .. } => {
            let dom = lookup(conn, domain)?;
            let xml = dom.xml_desc(if *inactive { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 }).map_err(lv("dumpxml"))?;
            let parsed = domain_xml::parse(&xml).map_err(|e| any_err(&e))?;
            let r = report(host, &parsed);
            if *json {
                print_out(&doc::render(&r).unwrap_or_default());
            } else {
                print!("{}", render_report(&r));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // What `vgpuctl --version` compares with its own line.
    if std::env::args().nth(1).is_some_and(|a| a == "--version" || a == "-V") {
        print_out(&format!("{}\n", vgpuctl::version::line("vgpuctl-libvirt")));
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpuctl: {e}");
            match e {
                HelperError::Classified { code, .. } => ExitCode::from(code),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
