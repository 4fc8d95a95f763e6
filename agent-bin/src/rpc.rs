//! RPC workers (`ggml-rpc-server`, llama.cpp's `--rpc`): ask one what it is before llama-server
//! depends on it.
//!
//! llama-server with `--rpc` aborts or hangs on a worker that is down, busy with another client,
//! of another protocol, or built without the tbq types (an upstream worker would be sent tensors of
//! types it does not know). [`probe`] speaks the worker's own protocol (ggml-rpc.cpp, protocol 7):
//!
//! ```text
//! request : | cmd (1 byte) | size (u64 LE) | payload |
//! response: | size (u64 LE) | payload |
//! HELLO (14): payload 24 zero bytes (no transport upgrade) -> major, minor, patch, tbq_format, 24 caps bytes
//! DEVICE_COUNT (15): no payload -> u32 devices
//! GET_DEVICE_MEMORY (11): u32 device -> u64 free, u64 total
//! ```
//!
//! `tbq_format` is the byte upstream sends as padding (always 0); this repository's patch series
//! (patches/0010, 0011) puts its tbq block format there, and its llama.cpp sends a tbq tensor only
//! to a worker of the same format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::error::{fail, Exit};

/// The protocol major version of the pinned llama.cpp's ggml-rpc (`RPC_PROTO_MAJOR_VERSION`).
pub const PROTO_MAJOR: u8 = 7;
/// `GGML_RPC_TBQ_FORMAT` of this repository's patch series (2: with the 64-wide types; 3: with
/// the compact-header 64-wide types, patches/0013).
pub const TBQ_FORMAT: u8 = 3;

const CMD_GET_DEVICE_MEMORY: u8 = 11;
const CMD_HELLO: u8 = 14;
const CMD_DEVICE_COUNT: u8 = 15;
/// `RPC_CONN_CAPS_SIZE`: transport capabilities; all zero asks for none (plain TCP).
const CAPS: usize = 24;

/// What a worker said about itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Worker {
    /// As given (`HOST:PORT`).
    pub endpoint: String,
    /// Protocol version, `major.minor.patch`.
    pub version: String,
    /// The worker's tbq block format; 0 for a worker built without the tbq types.
    pub tbq_format: u8,
    /// Its devices' free and total memory in bytes.
    pub devices: Vec<DeviceMemory>,
}

/// One device of a worker.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

impl Worker {
    /// One line for people: `127.0.0.1:50052: protocol 7.0.0, tbq format 3, 1 device (7.6 of 8.0 GiB free)`.
    pub fn describe(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let devs: Vec<String> = self
            .devices
            .iter()
            .map(|d| format!("{:.1} of {:.1} GiB free", gib(d.free), gib(d.total)))
            .collect();
        let tbq = match self.tbq_format {
            0 => "no tbq types".to_string(),
            f => format!("tbq format {f}"),
        };
        format!(
            "{}: protocol {}, {tbq}, {} device{} ({})",
            self.endpoint,
            self.version,
            self.devices.len(),
            if self.devices.len() == 1 { "" } else { "s" },
            devs.join("; ")
        )
    }
}

/// Asks the worker at `endpoint` (`HOST:PORT`) for its version, tbq format and devices.
/// `timeout` bounds the connection and each answer.
pub fn probe(endpoint: &str, timeout: Duration) -> Result<Worker> {
    let down = |why: String| {
        fail(
            Exit::Input,
            format!("RPC worker {endpoint} did not answer: {why}"),
        )
        .fix(format!(
            "start it on that machine (`ggml-rpc-server --host 0.0.0.0 --port PORT`, built by \
             scripts/build-llama.sh), check the address and that no firewall is in the way, or \
             drop {endpoint} from --rpc"
        ))
    };
    let addr = resolve(endpoint).map_err(|e| down(e.to_string()))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| down(e.to_string()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;

    let hello = command(&mut s, CMD_HELLO, &[0u8; CAPS], 4 + CAPS).map_err(|e| {
        fail(
            Exit::Input,
            format!("{endpoint} accepted the connection but did not answer HELLO ({e})"),
        )
        .fix(
            "a ggml-rpc-server serves one client at a time: stop the other llama.cpp client \
             using it, or check that this port is a ggml-rpc-server of llama.cpp build 11312",
        )
    })?;
    let (major, minor, patch, tbq_format) = (hello[0], hello[1], hello[2], hello[3]);
    let version = format!("{major}.{minor}.{patch}");
    if major != PROTO_MAJOR {
        return Err(fail(
            Exit::Input,
            format!(
                "RPC worker {endpoint} speaks protocol {version}; this llama.cpp speaks {PROTO_MAJOR}.x"
            ),
        )
        .fix("build the worker from this repository (scripts/build-llama.sh builds ggml-rpc-server)")
        .into());
    }
    let count = command(&mut s, CMD_DEVICE_COUNT, &[], 4)?;
    let count = u32::from_le_bytes(count[..4].try_into().unwrap());
    let mut devices = Vec::new();
    for d in 0..count {
        let m = command(&mut s, CMD_GET_DEVICE_MEMORY, &d.to_le_bytes(), 16)?;
        devices.push(DeviceMemory {
            free: u64::from_le_bytes(m[..8].try_into().unwrap()),
            total: u64::from_le_bytes(m[8..16].try_into().unwrap()),
        });
    }
    Ok(Worker {
        endpoint: endpoint.to_string(),
        version,
        tbq_format,
        devices,
    })
}

/// Refuses a worker that cannot hold a tbq cache when the profile stores one.
pub fn check_tbq(w: &Worker) -> Result<()> {
    if w.tbq_format == TBQ_FORMAT {
        return Ok(());
    }
    let what = match w.tbq_format {
        0 => "was built without the tbq cache types (an upstream ggml-rpc-server)".to_string(),
        f => format!(
            "has tbq format {f}, this build {TBQ_FORMAT} (another version of the patch series)"
        ),
    };
    Err(fail(Exit::Input, format!("RPC worker {} {what}", w.endpoint))
        .fix(
            "build ggml-rpc-server on that machine from this repository (scripts/build-llama.sh), \
             or use a stock cache type (f16, q8_0, q4_0) with this worker",
        )
        .into())
}

fn resolve(endpoint: &str) -> std::io::Result<SocketAddr> {
    endpoint.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )
    })
}

/// Sends one command and reads its answer, which must be `want` bytes long.
fn command(s: &mut TcpStream, cmd: u8, payload: &[u8], want: usize) -> Result<Vec<u8>> {
    let mut msg = Vec::with_capacity(9 + payload.len());
    msg.push(cmd);
    msg.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    msg.extend_from_slice(payload);
    s.write_all(&msg)?;
    let mut size = [0u8; 8];
    s.read_exact(&mut size)?;
    let size = u64::from_le_bytes(size);
    anyhow::ensure!(
        size == want as u64,
        "command {cmd} answered {size} bytes where {want} were expected (another protocol)"
    );
    let mut out = vec![0u8; want];
    s.read_exact(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_named_with_a_fix() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = l.local_addr().unwrap().to_string();
        drop(l);
        let e = probe(&ep, Duration::from_secs(2)).unwrap_err();
        let (exit, fix) = crate::error::classify(&e);
        assert_eq!(exit, Exit::Input);
        assert!(e.to_string().contains(&ep), "{e}");
        assert!(fix.unwrap_or("").contains("ggml-rpc-server"));
    }

    #[test]
    fn a_worker_without_tbq_is_refused_by_name() {
        let w = Worker {
            endpoint: "10.0.0.2:50052".into(),
            version: "7.0.0".into(),
            tbq_format: 0,
            devices: vec![],
        };
        let e = check_tbq(&w).unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:50052") && e.contains("without the tbq"),
            "{e}"
        );
        assert!(check_tbq(&Worker {
            tbq_format: TBQ_FORMAT,
            ..w
        })
        .is_ok());
    }
}
