//! What every command handler gets: where cove's files are and how to print.

use anyhow::Result;
use cove_state::Paths;

pub struct Ctx {
    pub paths: Paths,
    /// Print machine-readable JSON instead of tables and sentences.
    pub json: bool,
}

impl Ctx {
    pub fn from_env(json: bool) -> Result<Self> {
        Ok(Self {
            paths: Paths::from_env()?,
            json,
        })
    }
}
