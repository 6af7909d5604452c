#![allow(dead_code)]
pub mod guest;
pub mod sim;
