#![allow(dead_code)]
pub mod guest;
pub mod replay;
pub mod sim;
