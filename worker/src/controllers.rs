//! The controllers a worker may talk to, and which one leads. A worker is given one or more
//! controller URLs; it talks to the leader. A follower refuses worker calls with the leader's URL
//! in the `ferry-leader` header: the worker switches to it. When a controller cannot be reached,
//! the worker tries the next URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_proto::transport::ClientTls;
use ferry_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// gRPC metadata key a follower uses to name the leader.
pub use ferry_proto::LEADER_HEADER;

/// A client of the worker API that carries the worker's credentials.
pub type Client = WorkerServiceClient<InterceptedService<Channel, Credentials>>;

/// A session's id and key as metadata values.
type Session = (MetadataValue<Ascii>, MetadataValue<Ascii>);

/// What every call carries: the join token, and once registered the session's id and key.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
    session: Arc<Mutex<Option<Session>>>,
}

impl Credentials {
    /// Credentials with a join token.
    pub fn new(token: &str) -> anyhow::Result<Credentials> {
        let token = if token.is_empty() {
            None
        } else {
            Some(format!("Bearer {token}").parse().map_err(|_| {
                anyhow::anyhow!("the join token holds characters a header cannot carry")
            })?)
        };
        Ok(Credentials {
            token,
            session: Default::default(),
        })
    }

    /// True once a session was opened.
    pub fn has_session(&self) -> bool {
        self.session.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Remembers the session every later call speaks for (`None`: none yet).
    pub fn set_session(&self, session: Option<(&str, &str)>) {
        let parsed = session.and_then(|(id, key)| Some((id.parse().ok()?, key.parse().ok()?)));
        if let Ok(mut s) = self.session.lock() {
            *s = parsed;
        }
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        if let Some(t) = &self.token {
            md.insert("authorization", t.clone());
        }
        if let Ok(s) = self.session.lock()
            && let Some((id, key)) = s.as_ref()
        {
            md.insert(ferry_proto::WORKER_ID_HEADER, id.clone());
            md.insert(ferry_proto::SESSION_HEADER, key.clone());
        }
        Ok(req)
    }
}

/// A set of controller URLs and the one currently used.
#[derive(Clone)]
pub struct Controllers {
    state: Arc<Mutex<State>>,
    tls: ClientTls,
    credentials: Credentials,
}

struct State {
    urls: Vec<String>,
    current: String,
    channels: HashMap<String, Channel>,
}

fn channel(url: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    Ok(ferry_proto::transport::endpoint(url, tls)
        .map_err(anyhow::Error::msg)?
        .connect_lazy())
}

impl Controllers {
    /// Parses `URL[,URL…]`; calls carry `credentials` and use `tls` for `https://` URLs.
    pub fn new(
        list: &str,
        tls: ClientTls,
        credentials: Credentials,
    ) -> anyhow::Result<Controllers> {
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
            channels.insert(url.clone(), channel(url, &tls)?);
        }
        Ok(Controllers {
            state: Arc::new(Mutex::new(State {
                urls,
                current: first,
                channels,
            })),
            tls,
            credentials,
        })
    }

    /// The credentials every call carries.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A client of the controller currently believed to lead.
    pub fn client(&self) -> Client {
        let state = self.state.lock().expect("controllers lock");
        let channel = state
            .channels
            .get(&state.current)
            .cloned()
            .expect("the current controller has a channel");
        WorkerServiceClient::with_interceptor(channel, self.credentials.clone())
            .max_decoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
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
                    match channel(&leader, &self.tls) {
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
