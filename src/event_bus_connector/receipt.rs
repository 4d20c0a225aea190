//! What a publisher holds between handing events over and their being durable.
//!
//! Owns [`PublishReceipt`] and [`BatchPublishReceipt`]: futures that resolve once the events
//! they stand for are durable in the WAL, so one task can keep many publishes in flight
//! (enqueue several, then await the receipts in order) without a task per publish. The order
//! of events in the log is fixed when the receipt is returned; dropping a receipt does not
//! withdraw anything: the events are still made durable and delivered.

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::error::{EventBusConnectorError, EventBusConnectorResult};
use crate::wal::WalError;

/// Resolves to an event's sequence once it is durable; see
/// [`super::EventBusConnector::enqueue`].
#[must_use = "the event is only known to be durable when the receipt resolves"]
#[derive(Debug)]
pub struct PublishReceipt {
    pub(super) receiver: oneshot::Receiver<Result<u64, WalError>>,
}

impl Future for PublishReceipt {
    type Output = EventBusConnectorResult<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(answer_result)
    }
}

/// Resolves to a batch's sequences (consecutive, in order) once all of it is durable; see
/// [`super::EventBusConnector::enqueue_batch`].
#[must_use = "the batch is only known to be durable when the receipt resolves"]
#[derive(Debug)]
pub struct BatchPublishReceipt {
    /// `None` for an empty batch, which resolves at once to no sequences.
    pub(super) receiver: Option<oneshot::Receiver<Result<RangeInclusive<u64>, WalError>>>,
}

impl Future for BatchPublishReceipt {
    type Output = EventBusConnectorResult<Vec<u64>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.receiver.as_mut() {
            Some(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|answer| answer_result(answer).map(Iterator::collect)),
            None => Poll::Ready(Ok(Vec::new())),
        }
    }
}

/// The WAL's answer as the connector reports it; no answer at all means the ring stopped.
fn answer_result<T>(
    answer: Result<Result<T, WalError>, oneshot::error::RecvError>,
) -> EventBusConnectorResult<T> {
    match answer {
        Ok(result) => result.map_err(super::wal_error),
        Err(_) => Err(EventBusConnectorError::ShutDown),
    }
}
