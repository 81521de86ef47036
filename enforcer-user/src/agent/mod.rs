//! The node agent (`enforcer run`): sources → compile → program the datapath, level-triggered.

pub mod status;
