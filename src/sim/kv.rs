//! The simulated service: a key-value store with put, get and compare-and-swap, and the state
//! machine that applies them. Writes travel through the Raft log; a read goes through the log
//! too, or is served by the leader after a ReadIndex (a quorum round or the lease).

/// What a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set the key to the value.
    Put(u64),
    /// Read the key.
    Get,
    /// Set the key to `new` if it holds `expected`.
    Cas {
        /// The value required.
        expected: u64,
        /// The value written on success.
        new: u64,
    },
}

/// One command in the log: a client's operation on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cmd {
    /// The client that issued it.
    pub client: u32,
    /// A run-wide unique id of the operation (also the value a put writes).
    pub op_id: u64,
    /// The key.
    pub key: u32,
    /// The operation.
    pub op: Op,
    /// A read served through ReadIndex (or the lease) instead of the log.
    pub via_read_index: bool,
}

/// The result of applying a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// A put took effect.
    Written,
    /// The value read (`None`: never written).
    Value(Option<u64>),
    /// Whether a compare-and-swap took effect.
    Swapped(bool),
}

/// The replicated state machine: one optional value per key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    values: Vec<Option<u64>>,
}

impl KvStore {
    /// A store of `keys` empty keys.
    pub fn new(keys: u32) -> KvStore {
        KvStore {
            values: vec![None; keys as usize],
        }
    }

    /// Applies a command and returns its result.
    pub fn apply(&mut self, cmd: &Cmd) -> OpResult {
        let slot = &mut self.values[cmd.key as usize];
        match cmd.op {
            Op::Put(v) => {
                *slot = Some(v);
                OpResult::Written
            }
            Op::Get => OpResult::Value(*slot),
            Op::Cas { expected, new } => {
                let ok = *slot == Some(expected);
                if ok {
                    *slot = Some(new);
                }
                OpResult::Swapped(ok)
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: u32) -> Option<u64> {
        self.values[key as usize]
    }
}
