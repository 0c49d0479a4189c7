//! Per-stream flow control, the accounting both ends share.
//!
//! Each side grants its peer [`INITIAL_WINDOW`] bytes of credit per stream. Data and Msg frames
//! cost their payload plus [`FRAME_COST`] (so a flood of tiny frames is bounded too). The receiver
//! returns credit with Window frames only as its consumer takes the bytes, so a fast producer can
//! never make the other side buffer more than one window per stream. A peer that sends beyond its
//! credit is broken: the receiver resets the stream.

/// Credit each side starts with for each stream, in bytes.
pub const INITIAL_WINDOW: u32 = 512 * 1024;
/// Fixed cost added to every credited frame.
pub const FRAME_COST: u32 = 32;

/// Credit a Data/Msg frame with this payload length costs.
pub fn cost(payload_len: usize) -> u32 {
    payload_len as u32 + FRAME_COST
}

/// Receiver-side accounting for one stream.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    /// Credit the peer still has.
    outstanding: u32,
    /// Consumed but not yet returned.
    unacked: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow {
            outstanding: INITIAL_WINDOW,
            unacked: 0,
        }
    }
}

impl RecvWindow {
    /// A frame arrived: false means the peer overran its credit (reset the stream).
    pub fn on_receive(&mut self, cost: u32) -> bool {
        match self.outstanding.checked_sub(cost) {
            Some(left) => {
                self.outstanding = left;
                true
            }
            None => false,
        }
    }

    /// The consumer took a frame of this cost: returns a Window increment to send, batched to a
    /// quarter window so small frames do not each cause a Window frame.
    pub fn on_consume(&mut self, cost: u32) -> Option<u32> {
        self.unacked += cost;
        if self.unacked >= INITIAL_WINDOW / 4 || self.outstanding < INITIAL_WINDOW / 2 {
            let inc = std::mem::take(&mut self.unacked);
            self.outstanding += inc;
            Some(inc)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_and_returns_credit() {
        let mut w = RecvWindow::default();
        let c = cost(60_000);
        let mut n = 0;
        while w.on_receive(c) {
            n += 1;
        }
        assert_eq!(n, INITIAL_WINDOW / c);
        let mut total = 0;
        for _ in 0..n {
            total += w.on_consume(c).unwrap_or(0);
        }
        assert!(total > 0);
        assert!(w.on_receive(c), "credit returned after consumption");
    }
}
