//! The selection interface every balancing policy implements.
//!
//! A policy sees a read-only view of each upstream's counts and picks one
//! index among those marked eligible. It keeps whatever state it needs
//! (a round-robin cursor, a hash ring) and never touches connections.

/// What a policy may know about one upstream when choosing.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Configured weight, at least 1.
    pub weight: u32,
    /// Connections carrying an exchange now.
    pub active: usize,
    /// Idle keep-alive connections ready for reuse.
    pub idle: usize,
    /// Requests waiting for one of its connections to free up.
    pub queued: usize,
    /// Up, and below its connection limit or holding an idle connection.
    pub eligible: bool,
}

/// Facts about the request being placed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestKey {
    /// Hash of the request path (for URL-hash policies).
    pub path_hash: u64,
}

/// A balancing policy.
pub trait Policy: Send {
    /// Pick the index of an eligible candidate, or None if none is.
    fn pick(&mut self, candidates: &[Candidate], key: RequestKey) -> Option<usize>;
    /// Short name for logs and the status page.
    fn name(&self) -> &'static str;
}
