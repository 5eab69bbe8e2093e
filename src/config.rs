//! TEMPORARY stub matching the agreed compiled form; replaced by the real module.
use crate::delivery::retry::RetryPolicy;
use crate::osmox::StatusSet;
use crate::signing::Secret;

#[derive(Debug, Clone)]
pub struct Config { pub endpoints: Vec<Endpoint>, pub watch: Watch, pub retry: RetryPolicy, pub limits: Limits, pub dead_letter: Option<DeadLetter>, pub learn: Option<Learn>, pub tick_ms: u64 }
#[derive(Debug, Clone)]
pub struct Endpoint { pub name: String, pub target: Target, pub provider_ids: Option<Vec<u64>>, pub channel_types: Option<Vec<u64>>, pub delivery_statuses: StatusSet, pub timeout_ms: u64, pub headers: Vec<(String, String)>, pub retry: RetryPolicy, pub max_in_flight: u32, pub circuit: CircuitPolicy, pub secrets: Vec<Secret> }
#[derive(Debug, Clone)]
pub struct CircuitPolicy { pub failure_threshold: u32, pub open_ms: u64 }
#[derive(Debug, Clone)]
pub struct Watch { pub graphql_paths: Vec<String>, pub rest_path_prefixes: Vec<String>, pub max_body_bytes: usize }
#[derive(Debug, Clone)]
pub struct Limits { pub max_pending: u32, pub max_remembered: u32 }
#[derive(Debug, Clone)]
pub struct Target { pub cluster: String, pub authority: String, pub path: String, pub scheme: String }
#[derive(Debug, Clone)]
pub struct DeadLetter { pub target: Target, pub timeout_ms: u64, pub headers: Vec<(String, String)> }
#[derive(Debug, Clone)]
pub struct Learn { pub cluster: String, pub allow_private: bool, pub timeout_ms: u64 }
impl Config { pub fn endpoint(&self, name: &str) -> Option<&Endpoint> { self.endpoints.iter().find(|e| e.name == name) } }
