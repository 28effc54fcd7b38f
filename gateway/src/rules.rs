//! What a deploy carries to the router and the nodes.

use rule_lang::program::RuleSet;
use std::sync::Arc;

/// One deploy: the sources (nodes compile them), the versions, and the
/// compiled set (the router decodes and routes with it).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Rule-set version: +1 on every deploy of this gateway process.
    pub version: u64,
    pub files: Vec<(String, String)>,
    /// Per rule: (name, rule version, shadow).
    pub rules: Vec<(String, u32, bool)>,
    pub set: Arc<RuleSet>,
}
