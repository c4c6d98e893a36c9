//! The config as a run takes it: the validated [`crate::config::Config`]
//! with every feed's mapping compiled by [`crate::mapping`]. This layer sits
//! above both, so the validated config depends on neither the mapping
//! compiler nor the policy table (which takes a feed's declared basis from
//! it: [`crate::policy::FeedPolicy::of`]).

use std::path::Path;

use crate::config::{ConfigError, Problem};
use crate::mapping::Mapping;

/// A validated config whose feeds carry their compiled mappings.
pub type Config = crate::config::Config<Mapping>;

/// A configured feed with its compiled mapping.
pub type FeedConfig = crate::config::FeedConfig<Mapping>;

impl crate::config::Config<Mapping> {
    /// Reads, parses and validates a config file and every mapping it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, crate::mapping::load).and_then(|c| with_feed_settings(c, path))
    }

    /// Parses `text` as if read from `path`, with `env` the environment's
    /// variables (those that are not overrides are ignored), and compiles
    /// every mapping it names.
    pub fn from_str_at(
        text: &str,
        path: &Path,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        Config::from_str_with(text, path, env, crate::mapping::load)
            .and_then(|c| with_feed_settings(c, path))
    }
}

/// Applies what a feed sets over its mapping: an aggregate feed's
/// `small_cell_k`.
fn with_feed_settings(mut cfg: Config, path: &Path) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    for f in &mut cfg.feeds {
        let Some(k) = f.small_cell_k else { continue };
        match &mut f.mapping.aggregate {
            Some(a) => a.k = k,
            None => problems.push(Problem {
                file: path.to_path_buf(),
                line: 0,
                field: "feeds.small_cell_k".into(),
                message: format!(
                    "feed {}: applies to aggregate mappings (with an [aggregate] section) only",
                    f.name
                ),
            }),
        }
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError { problems })
    }
}
