//! `$sys.*` calls the router answers itself (the methods of
//! `switchboard_proto::api::SysCall`): decoded once, admitted by the rule
//! of each method, dispatched here and nowhere else. The supervisor's
//! `$sys.services` is not here: an app serves it like any service.

use bytes::Bytes;
use switchboard_proto::api::{SysCall, SysError};
use switchboard_proto::stats::CallReport;
use switchboard_proto::{sys, Call, ErrorCode, Frame, MethodName, ServiceName, SessionId};

use super::{Congested, Router};

/// Breakers kept per connection; a report with more keeps the first.
const MAX_REPORTED_BREAKERS: usize = 256;

impl Router {
    /// Answers a `$sys` call: now, once a change is on disk (queues), or
    /// when the instance answers (a direct channel's grant).
    pub(super) fn sys_call(
        &mut self,
        from: SessionId,
        call: &Call,
        decoded: Result<SysCall, SysError>,
    ) -> Option<Congested> {
        let id = call.id;
        let admitted = self
            .admit_sys(from, &call.service, &call.method, decoded.as_ref().ok())
            .and(decoded)
            .and_then(|sys_call| {
                if self.shutting_down {
                    return Err((ErrorCode::ShuttingDown, "the daemon is shutting down".into()));
                }
                Ok(sys_call)
            });
        let sys_call = match admitted {
            Ok(sys_call) => sys_call,
            Err((code, message)) => {
                self.send_error(from, id, code, message);
                return None;
            }
        };
        if let Some(admin) = self.remote_admin(&sys_call) {
            self.hand_to_remote_queues(from, id, admin);
            return None;
        }
        let answer: Result<Option<Vec<u8>>, SysError> = match &sys_call {
            SysCall::DaemonDirect(request) => return self.grant_direct(from, id, call.timeout_ms, request),
            SysCall::RegionsOpen(open) => {
                match self.open_region(from, open) {
                    Ok(grant) => self.send(from, &Frame::Reply { id, payload: grant }),
                    Err((code, message)) => self.send_error(from, id, code, message),
                }
                return None;
            }
            SysCall::RegionsChanged(region) => {
                self.region_changed(from, &region.name).map(|sequence| Some(sys::encode(&sequence)))
            }
            SysCall::RegionsList => Ok(Some(sys::encode(&self.region_infos()))),
            SysCall::QueuesList => Ok(Some(sys::encode(&self.queue_infos()))),
            SysCall::QueuesDeclare(declare) => self.declare(from, id, declare).map(|()| None),
            SysCall::QueuesPeek(peek) => self.peek(peek).map(|found| Some(sys::encode(&found))),
            SysCall::QueuesPurge(queue) => self.purge(from, id, &queue.queue).map(|()| None),
            SysCall::QueuesDelete(queue) => self.delete_queue(from, id, &queue.queue).map(|()| None),
            SysCall::DaemonInfo => Ok(Some(sys::encode(&crate::admin::info(self)))),
            SysCall::DaemonWhoami => Ok(Some(sys::encode(&crate::admin::whoami(self, from)))),
            SysCall::DaemonReportBreakers(report) => {
                if let Some(session) = self.sessions.get_mut(&from) {
                    // Bounded like a name list: a client has few targets.
                    session.breakers = report.breakers.iter().take(MAX_REPORTED_BREAKERS).cloned().collect();
                }
                Ok(Some(Vec::new()))
            }
            SysCall::DaemonBreakers => Ok(Some(sys::encode(&crate::admin::breakers(self)))),
            SysCall::DaemonStats => Ok(Some(sys::encode(&crate::admin::stats(self)))),
            SysCall::DaemonMonitor(request) => {
                self.start_monitor(from, id, request).map(|()| Some(Vec::new()))
            }
            SysCall::DaemonReportCalls(report) => {
                self.count_direct_calls(from, report);
                Ok(Some(Vec::new()))
            }
            SysCall::RegistryList => Ok(Some(sys::encode(&crate::admin::list(self)))),
            SysCall::TopicsList => Ok(Some(sys::encode(&crate::admin::topics(self)))),
        };
        match answer {
            Ok(Some(reply)) => self.send(from, &Frame::Reply { id, payload: Bytes::from(reply) }),
            Ok(None) => {}
            Err((code, message)) => self.send_error(from, id, code, message),
        }
        None
    }

    /// Counts a report of calls served over direct channels, for the
    /// methods the reporting connection's own instances serve (a client
    /// cannot add to another's counts).
    fn count_direct_calls(&mut self, from: SessionId, report: &CallReport) {
        let Ok(service) = ServiceName::parse(&report.service) else { return };
        let registry = &self.registry;
        let serves = |method: &MethodName| {
            registry.instances_of(&service).into_iter().filter_map(|id| registry.get(id)).any(|instance| {
                instance.session == from && instance.methods.iter().any(|m| &m.name == method)
            })
        };
        self.stats.reported(report, serves);
    }
}
