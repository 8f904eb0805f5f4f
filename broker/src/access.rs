//! What the broker's owner decides: who may connect, and what each client may do.

/// What one connected client may do.
pub trait Client: Clone + Send + Sync + 'static {
    /// Its name, for logs; sessions are resumed only by the same name.
    fn name(&self) -> &str;
    /// Whether it may connect with this client id (never empty here).
    fn may_use_client_id(&self, id: &str) -> bool {
        let _ = id;
        true
    }
    /// Whether it may publish to `topic` (a valid, concrete topic).
    fn may_publish(&self, topic: &str) -> bool;
    /// Whether it may subscribe to `filter` (a valid filter).
    fn may_subscribe(&self, filter: &str) -> bool;
    /// Whether a message on `topic` may be delivered to it (checked again at delivery, whatever
    /// it subscribed to).
    fn may_receive(&self, topic: &str) -> bool;
}

/// Checks credentials.
pub trait Authenticator: Send + Sync + 'static {
    /// The rights of a connected client.
    type Client: Client;
    /// Who presents these credentials (each `None` when the CONNECT has none), or `None` to
    /// refuse the connection.
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<Self::Client>;
    /// The rights of the owner of a stored session, by name, or `None` when it no longer
    /// exists (its session is then dropped).
    fn restore(&self, name: &str) -> Option<Self::Client> {
        let _ = name;
        None
    }
}
