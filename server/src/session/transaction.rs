//! A connection's open transactions: what each buffers until COMMIT,
//! bounded in frames and in bytes, the bytes counted in the broker's
//! memory like any other message bytes.

use std::collections::HashMap;

use stomp_codec::ByteString;

use crate::broker::Charge;
use crate::error::SessionError;
use crate::protocol::{AckTarget, ClientFrame};

/// One buffered operation.
#[derive(Debug)]
pub(super) enum TxOp {
    /// Boxed: a SEND is far larger than an ACK.
    Send(Box<ClientFrame>),
    Ack(AckTarget),
    /// The target, and whether it is requeued (else dead-lettered).
    Nack(AckTarget, bool),
}

#[derive(Debug, Default)]
struct Transaction {
    ops: Vec<TxOp>,
    bytes: usize,
}

/// The open transactions of one connection.
#[derive(Debug)]
pub(super) struct Transactions {
    open: HashMap<ByteString, Transaction>,
    /// Bytes buffered in all of them.
    charge: Charge,
    max_open: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Transactions {
    pub(super) fn new(
        charge: Charge,
        max_open: usize,
        max_frames: usize,
        max_bytes: usize,
    ) -> Transactions {
        Transactions {
            open: HashMap::new(),
            charge,
            max_open,
            max_frames,
            max_bytes,
        }
    }

    /// BEGIN.
    pub(super) fn begin(&mut self, tx: ByteString) -> Result<(), SessionError> {
        if self.open.contains_key(&tx) {
            return Err(SessionError::DuplicateTransaction(tx.to_string()));
        }
        if self.open.len() >= self.max_open {
            return Err(SessionError::LimitReached("too many open transactions"));
        }
        self.open.insert(tx, Transaction::default());
        Ok(())
    }

    /// Buffers an operation of `bytes` in `tx`.
    pub(super) fn buffer(
        &mut self,
        tx: &ByteString,
        op: TxOp,
        bytes: usize,
    ) -> Result<(), SessionError> {
        let transaction = self
            .open
            .get_mut(tx)
            .ok_or_else(|| SessionError::UnknownTransaction(tx.to_string()))?;
        if transaction.ops.len() >= self.max_frames {
            return Err(SessionError::LimitReached(
                "too many frames in one transaction",
            ));
        }
        let total = self.charge.bytes() + bytes;
        if total > self.max_bytes {
            return Err(SessionError::LimitReached(
                "too many bytes buffered in this connection's transactions (max_transaction_bytes)",
            ));
        }
        transaction.ops.push(op);
        transaction.bytes += bytes;
        self.charge.set(total);
        Ok(())
    }

    /// Ends `tx` (COMMIT or ABORT) and hands over what it buffered.
    pub(super) fn end(&mut self, tx: &ByteString) -> Result<Vec<TxOp>, SessionError> {
        let transaction = self
            .open
            .remove(tx)
            .ok_or_else(|| SessionError::UnknownTransaction(tx.to_string()))?;
        self.charge.set(self.charge.bytes() - transaction.bytes);
        Ok(transaction.ops)
    }

    /// Drops every open transaction (the connection is closing).
    pub(super) fn clear(&mut self) {
        self.open.clear();
        self.charge.set(0);
    }
}
