//! Logging: every component carries a slog [`Logger`]; the default drain forwards to the `log`
//! facade, so a host program that set up `env_logger` (or any `log` backend) sees traft's lines
//! without further setup. Node loggers carry `group` and `peer` keys on every line.
//!
//! The library never prints to stdout or stderr itself.

use slog::{o, Drain, Logger};

use crate::types::{GroupId, PeerId};

/// The default root logger: structured records forwarded to the `log` facade.
pub fn default_logger() -> Logger {
    Logger::root(slog_stdlog::StdLog.fuse(), o!())
}

/// A logger for one component (`"timer"`, `"rpc"`), below `parent`.
pub fn component_logger(parent: &Logger, component: &'static str) -> Logger {
    parent.new(o!("component" => component))
}

/// A logger for one peer of one group: every line carries `group` and `peer`.
pub fn node_logger(parent: &Logger, group: &GroupId, peer: &PeerId) -> Logger {
    parent.new(o!("group" => group.to_string(), "peer" => peer.to_string()))
}

/// A logger that discards everything (benchmarks that must not pay for logging).
pub fn discard_logger() -> Logger {
    Logger::root(slog::Discard, o!())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A drain that keeps formatted key-values, to check what a line carries.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl Drain for Capture {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record, kv: &slog::OwnedKVList) -> Result<(), slog::Never> {
            use slog::KV;
            struct S(String);
            impl slog::Serializer for S {
                fn emit_arguments(
                    &mut self,
                    k: slog::Key,
                    v: &std::fmt::Arguments,
                ) -> slog::Result {
                    self.0.push_str(&format!("{k}={v} "));
                    Ok(())
                }
            }
            let mut s = S(format!("{} ", r.msg()));
            let _ = kv.serialize(r, &mut s);
            self.0.lock().unwrap().push(s.0);
            Ok(())
        }
    }

    #[test]
    fn node_lines_carry_group_and_peer() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let root = Logger::root(Capture(lines.clone()).fuse(), o!());
        let group = GroupId::new("g1").unwrap();
        let peer: PeerId = "127.0.0.1:1:0".parse().unwrap();
        let log = node_logger(&root, &group, &peer);
        slog::info!(log, "became leader");
        let got = lines.lock().unwrap().join("\n");
        assert!(
            got.contains("group=g1") && got.contains("peer=127.0.0.1:1:0"),
            "{got}"
        );
    }

    #[test]
    fn default_logger_goes_to_the_log_facade_without_panicking() {
        let log = component_logger(&default_logger(), "test");
        slog::info!(log, "hello"; "k" => 1);
    }
}
