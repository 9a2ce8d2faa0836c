//! A connection's session state: protocol version, authentication, name.

use std::sync::Arc;

use bytes::Bytes;
use speedlayer_resp::Protocol;

use super::RespShared;

/// One connection's state.
pub struct Session {
    pub(super) shared: Arc<RespShared>,
    pub(super) id: u64,
    pub(super) protocol: Protocol,
    pub(super) authenticated: bool,
    pub(super) name: Option<Bytes>,
    pub(super) quit: bool,
}

impl Session {
    /// A fresh session; authenticated from the start when no password is configured.
    pub fn new(shared: Arc<RespShared>, id: u64) -> Self {
        let authenticated = shared.requirepass.is_none();
        Session {
            shared,
            id,
            protocol: Protocol::Resp2,
            authenticated,
            name: None,
            quit: false,
        }
    }

    /// The protocol replies are encoded in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// True once the client sent QUIT.
    pub fn quit(&self) -> bool {
        self.quit
    }
}
