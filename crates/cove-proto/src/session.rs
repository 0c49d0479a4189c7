//! The resynchronisation rules both ends follow, as a pure state machine.
//!
//! The byte stream between host and guest survives restarts of either end, so it may carry stale
//! bytes from a previous session. The rules:
//!
//! 1. A side that starts (agent start, host connect) or loses sync (a decode error) resets all of
//!    its streams, writes the zero preamble and sends `Hello{reply:false, nonce:N}`
//!    ([`Session::restart`]).
//! 2. A side receiving a Hello *request* resets all its streams and answers with a reply echoing
//!    the nonce; it is now synced. A repeated request with the nonce it already answered (a
//!    retransmission) is answered again but does not reset anything.
//! 3. A side receiving a Hello *reply* with its own latest nonce becomes synced; it does not reset
//!    (it already did in rule 1). Replies with other nonces are stale and ignored.
//! 4. While not synced, every frame other than Hello is dropped: it belongs to an old session.
//!
//! Only the host opens streams, and only once synced, so every Open the agent sees after a
//! request/reply pair belongs to the current session.

use crate::msg::{Hello, PROTOCOL_VERSION, Role};

/// What to do with a received Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloAction {
    /// Reset every stream, then send this reply.
    ResetAndReply(Hello),
    /// Send this reply (retransmitted request); keep streams.
    Reply(Hello),
    /// Our request was answered; we are synced.
    Synced,
    /// Stale reply: drop it.
    Ignore,
    /// The peer speaks another protocol version: refuse and report.
    Incompatible { peer_protocol: u32 },
}

/// Handshake state of one side.
#[derive(Debug, Clone)]
pub struct Session {
    role: Role,
    version: String,
    capabilities: Vec<String>,
    our_nonce: u64,
    last_peer_nonce: Option<u64>,
    synced: bool,
    peer: Option<Hello>,
}

impl Session {
    /// A session that is not yet synced.
    pub fn new(role: Role, version: impl Into<String>, capabilities: Vec<String>) -> Self {
        Session {
            role,
            version: version.into(),
            capabilities,
            our_nonce: 0,
            last_peer_nonce: None,
            synced: false,
            peer: None,
        }
    }

    /// Whether frames other than Hello may be processed.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The peer's latest Hello (its version and capabilities).
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    fn hello(&self, nonce: u64, reply: bool) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            role: self.role,
            version: self.version.clone(),
            capabilities: self.capabilities.clone(),
            nonce,
            reply,
        }
    }

    /// Rule 1: the caller resets its streams and sends the returned request (after the preamble).
    pub fn restart(&mut self, nonce: u64) -> Hello {
        self.our_nonce = nonce;
        self.synced = false;
        self.last_peer_nonce = None;
        self.hello(nonce, false)
    }

    /// The request to retransmit while waiting for a reply (same nonce, no reset).
    pub fn retransmit(&self) -> Hello {
        self.hello(self.our_nonce, false)
    }

    /// Rules 2 and 3.
    pub fn on_hello(&mut self, h: &Hello) -> HelloAction {
        if h.protocol != PROTOCOL_VERSION {
            return HelloAction::Incompatible {
                peer_protocol: h.protocol,
            };
        }
        if h.reply {
            if h.nonce == self.our_nonce && !self.synced {
                self.synced = true;
                self.peer = Some(h.clone());
                return HelloAction::Synced;
            }
            return HelloAction::Ignore;
        }
        let reply = self.hello(h.nonce, true);
        self.peer = Some(h.clone());
        if self.synced && self.last_peer_nonce == Some(h.nonce) {
            return HelloAction::Reply(reply);
        }
        self.synced = true;
        self.last_peer_nonce = Some(h.nonce);
        HelloAction::ResetAndReply(reply)
    }

    /// The transport closed (the agent saw EOF: host went away): wait for a new Hello.
    pub fn desync(&mut self) {
        self.synced = false;
        self.last_peer_nonce = None;
    }
}

/// A nonce that differs between processes and calls without a random-number crate: time, pid and
/// a counter mixed through SplitMix64. Nonces only need to differ, not be secret.
pub fn fresh_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = t
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        (
            Session::new(Role::Host, "h", vec![]),
            Session::new(Role::Agent, "a", vec!["exec".into()]),
        )
    }

    #[test]
    fn simple_handshake() {
        let (mut host, mut agent) = pair();
        let req = host.restart(11);
        let HelloAction::ResetAndReply(rep) = agent.on_hello(&req) else {
            panic!()
        };
        assert!(agent.synced());
        assert_eq!(host.on_hello(&rep), HelloAction::Synced);
        assert!(host.synced());
        assert_eq!(host.peer().unwrap().capabilities, ["exec"]);
    }

    #[test]
    fn crossing_requests_do_not_reset_after_streams_open() {
        // Both restart at once; each answers the other. The late reply must not reset.
        let (mut host, mut agent) = pair();
        let hreq = host.restart(1);
        let areq = agent.restart(2);
        let HelloAction::ResetAndReply(hrep) = host.on_hello(&areq) else {
            panic!()
        };
        // host is synced and may open streams now
        assert!(host.synced());
        let HelloAction::ResetAndReply(arep) = agent.on_hello(&hreq) else {
            panic!()
        };
        // agent gets host's reply to its own request: already synced, so Ignore (no reset)
        assert_eq!(agent.on_hello(&hrep), HelloAction::Ignore);
        assert_eq!(host.on_hello(&arep), HelloAction::Ignore);
    }

    #[test]
    fn retransmitted_request_does_not_reset() {
        let (mut host, mut agent) = pair();
        let req = host.restart(5);
        assert!(matches!(
            agent.on_hello(&req),
            HelloAction::ResetAndReply(_)
        ));
        assert!(matches!(
            agent.on_hello(&host.retransmit()),
            HelloAction::Reply(_)
        ));
    }

    #[test]
    fn stale_reply_ignored_and_version_checked() {
        let (mut host, mut agent) = pair();
        host.restart(7);
        let old = agent.restart(1);
        let mut stale = old.clone();
        stale.reply = true;
        assert_eq!(host.on_hello(&stale), HelloAction::Ignore);
        let mut future = old;
        future.protocol = 99;
        assert_eq!(
            host.on_hello(&future),
            HelloAction::Incompatible { peer_protocol: 99 }
        );
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}
