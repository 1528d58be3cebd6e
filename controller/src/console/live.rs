//! Live progress: `/jobs/ID/events` is the API's `WatchJob` stream (same call, same
//! authorization) as server-sent events. Each change sends event `job` whose data is the job's
//! live fragment, rendered by the same view as the page (so the browser only swaps it in); after
//! the final state comes event `end`. `console.js` follows these on every element with
//! `data-live`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_model::now_ms;
use ferry_proto::v1;
use ferry_proto::v1::control_service_server::ControlService;
use futures::{Stream, StreamExt};

use super::calls::Visitor;
use super::views::{self, is_final, job_state};
use super::{Console, Failure};

/// The events of one job's changes.
fn events_of(
    jobs: impl Stream<Item = Result<v1::Job, tonic::Status>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let updates = jobs.map(|job| {
        Ok(match job {
            Ok(job) => {
                let fragment = views::job_live(&job, now_ms()).into_string();
                let mut event = Event::default().event("job").data(fragment);
                if is_final(job.state) {
                    event = event.id(job_state(job.state));
                }
                event
            }
            Err(status) => Event::default().event("failure").data(status.message()),
        })
    });
    updates.chain(futures::stream::once(async {
        Ok(Event::default().event("end").data("end"))
    }))
}

pub async fn events(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let req = v1::GetJobRequest {
        team: v.team.clone(),
        id,
    };
    let stream = c.call(&v, "WatchJob", req, |a, r| a.watch_job(r)).await?;
    Ok(Sse::new(events_of(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_change_is_an_event_and_the_stream_says_when_it_ends() {
        let running = v1::Job {
            id: "j".into(),
            state: v1::JobState::Running as i32,
            ..Default::default()
        };
        let done = v1::Job {
            state: v1::JobState::Completed as i32,
            ..running.clone()
        };
        let events: Vec<_> = events_of(futures::stream::iter([Ok(running), Ok(done)]))
            .collect()
            .await;
        assert_eq!(events.len(), 3);
        let text: Vec<String> = events
            .into_iter()
            .map(|e| format!("{:?}", e.unwrap()))
            .collect();
        assert!(
            text[0].contains("job") && text[0].contains("Running"),
            "{}",
            text[0]
        );
        assert!(text[1].contains("Completed"), "{}", text[1]);
        assert!(text[2].contains("end"), "{}", text[2]);
    }
}
