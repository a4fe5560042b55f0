//! Creating an instance over a message store: its persistent sessions and retained messages
//! are loaded back before it accepts connections.

use std::sync::Arc;

use switchyard_store::message::unix_millis_now;
use switchyard_store::{MessageStore, StoreError};
use tracing::{info, warn};

use super::{Instance, SessionSlot};
use crate::auth::Authenticator;
use crate::persist::{InstanceStore, restored_retained};
use crate::session::Session;
use crate::settings::InstanceSettings;

impl Instance {
    /// Creates an instance that writes its persistent sessions and retained messages to
    /// `store`, after restoring what `store` contains for the instance id.
    ///
    /// A restored session is offline: its subscriptions are in the tree, its queue and its
    /// messages in flight are sent when the client resumes it, PUBLISH packets in flight
    /// again with DUP, and its inbound QoS 2 packet ids are still awaiting PUBREL. A session
    /// that was connected when the store was last written counts as disconnected now, so its
    /// expiry starts and its will falls due after its delay. Records that fail their checksum
    /// are logged and left out. Fails if the store cannot be read.
    ///
    /// A restored session keeps the origin of its last connection, so one that came through a
    /// DR group's global endpoint can still move to another member of the group. A session
    /// stored by a version that did not record origins counts as a region-listener session.
    pub async fn with_store(
        settings: InstanceSettings,
        auth: Arc<dyn Authenticator>,
        store: Arc<dyn MessageStore>,
    ) -> Result<Arc<Instance>, StoreError> {
        let state = store.load_all(&settings.id).await?;
        let instance_store = InstanceStore::new(store, &settings.id);
        let instance = Arc::new(Instance::build(settings, auth, Some(instance_store)));
        for record in &state.corrupt {
            warn!(instance = %instance.id(), %record, "Skipped a corrupt message store record");
        }

        let now = tokio::time::Instant::now().into_std();
        let now_millis = unix_millis_now();
        let session_count = state.sessions.len();
        let retained_count = state.retained.len();
        let mut restored = Vec::with_capacity(session_count);
        {
            let mut registry = instance.write_registry();
            // Each record is consumed as its session is rebuilt, so its memory is freed and
            // reused while the rest are restored.
            for stored in state.sessions {
                let session = Session::restore(
                    stored,
                    instance.settings.max_queued_messages,
                    now,
                    now_millis,
                );
                let client_id = session.client_id().clone();
                for (filter, subscriber) in session.subscriptions() {
                    registry
                        .subscriptions
                        .insert(filter, client_id.clone(), *subscriber);
                }
                let slot = Arc::new(SessionSlot::new(session));
                registry.sessions.insert(client_id, Arc::clone(&slot));
                restored.push(slot);
            }
        }
        for stored in state.retained {
            let message = restored_retained(stored, now, now_millis);
            instance.retained.retain(&Arc::new(message));
        }

        for slot in &restored {
            let (client_id, expiry, will) = {
                let session = slot.lock();
                (
                    session.client_id().clone(),
                    session.poll_expiry(),
                    session.poll_will(),
                )
            };
            if let Some(deadline) = will {
                let deadline = expiry.map_or(deadline, |expiry| deadline.min(expiry));
                instance.schedule_will(Arc::clone(slot), client_id.clone(), deadline);
            }
            if let Some(deadline) = expiry {
                instance.schedule_expiry(Arc::clone(slot), client_id, deadline);
            }
        }
        info!(
            instance = %instance.id(),
            sessions = session_count,
            retained = retained_count,
            expired_skipped = state.expired_skipped,
            corrupt = state.corrupt.len(),
            "Restored sessions and retained messages from the message store"
        );
        Ok(instance)
    }
}
