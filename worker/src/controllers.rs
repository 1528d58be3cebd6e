//! The controllers a worker may talk to, and which one leads. A worker is given one or more
//! controller URLs; it talks to the leader. A follower refuses worker calls with the leader's URL
//! in the `ferry-leader` header: the worker switches to it. When a controller cannot be reached,
//! the worker tries the next URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};

/// gRPC metadata key a follower uses to name the leader.
pub const LEADER_HEADER: &str = "ferry-leader";

/// A set of controller URLs and the one currently used.
#[derive(Clone)]
pub struct Controllers {
    state: Arc<Mutex<State>>,
}

struct State {
    urls: Vec<String>,
    current: String,
    channels: HashMap<String, Channel>,
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow::anyhow!("invalid controller URL {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .connect_lazy())
}

impl Controllers {
    /// Parses `URL[,URL…]`.
    pub fn new(list: &str) -> anyhow::Result<Controllers> {
        let urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let Some(first) = urls.first().cloned() else {
            anyhow::bail!("no controller URL given");
        };
        let mut channels = HashMap::new();
        for url in &urls {
            channels.insert(url.clone(), channel(url)?);
        }
        Ok(Controllers {
            state: Arc::new(Mutex::new(State {
                urls,
                current: first,
                channels,
            })),
        })
    }

    /// A client of the controller currently believed to lead.
    pub fn client(&self) -> WorkerServiceClient<Channel> {
        let state = self.state.lock().expect("controllers lock");
        let channel = state
            .channels
            .get(&state.current)
            .cloned()
            .expect("the current controller has a channel");
        WorkerServiceClient::new(channel)
    }

    /// The URL in use.
    pub fn current(&self) -> String {
        self.state
            .lock()
            .map(|s| s.current.clone())
            .unwrap_or_default()
    }

    /// Learns from a failed call: follows a leader hint, or moves on to the next URL when the
    /// controller could not be reached.
    pub fn failed(&self, status: &tonic::Status) {
        let hint = status
            .metadata()
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match hint {
            Some(leader) if leader != state.current => {
                if !state.channels.contains_key(&leader) {
                    match channel(&leader) {
                        Ok(c) => {
                            state.channels.insert(leader.clone(), c);
                        }
                        Err(_) => return,
                    }
                }
                tracing::info!(leader = %leader, "following the leader");
                state.current = leader;
            }
            Some(_) => {}
            None if status.code() == tonic::Code::Unavailable && state.urls.len() > 1 => {
                let i = state.urls.iter().position(|u| *u == state.current);
                let next = state.urls[i.map(|i| (i + 1) % state.urls.len()).unwrap_or(0)].clone();
                state.current = next;
            }
            None => {}
        }
    }
}
