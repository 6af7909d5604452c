#![allow(dead_code)]
pub mod guest;
