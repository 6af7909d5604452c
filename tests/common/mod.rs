#![allow(dead_code)]
pub mod contract;
pub mod guest;
pub mod replay;
pub mod sim;
