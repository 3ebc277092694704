//! Network namespaces for tests: create one (deleted again on drop, even when the test fails),
//! run commands inside it, make veth pairs, send raw frames, and capture with tcpdump to pcap.
//!
//! Everything shells out to the real tools (`ip`, `tcpdump`, `python3` for raw sends), so what
//! the tests see is what the kernel does. Needs root; without it the helpers panic with a clear
//! message instead of letting a test skip.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Panic unless running as root (network namespaces need it; tests never skip silently).
pub fn require_root() {
    // The Uid line of /proc/self/status: real, effective, ...
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    assert_eq!(
        uid, "0",
        "this test builds network namespaces and must run as root"
    );
}

fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command on the host, panicking with its output if it fails.
pub fn host(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    check(out, &format!("{args:?}"))
}

/// A network namespace that is deleted (with everything in it) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace named `<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        require_root();
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        host(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        host(&full)
    }

    /// A command run inside the namespace (not yet started).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `args` inside the namespace; panics with the output if it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = self
            .command(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name));
        check(out, &format!("{args:?} in {}", self.name))
    }

    /// A veth pair `a` (here) ↔ `b` (in `peer`, or here when `None`), both up.
    pub fn veth(&self, a: &str, b: &str, peer: Option<&Netns>) {
        let peer_name = peer.map_or(self.name.as_str(), |p| p.name());
        self.ip(&[
            "link", "add", a, "type", "veth", "peer", "name", b, "netns", peer_name,
        ]);
        self.ip(&["link", "set", a, "up"]);
        host(&["ip", "-n", peer_name, "link", "set", b, "up"]);
    }

    /// Send one raw Ethernet frame out of `iface` (an AF_PACKET socket, from python3's stdlib).
    pub fn send_raw(&self, iface: &str, frame: &[u8]) {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        let script = "import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind((sys.argv[1],0))\ns.send(bytes.fromhex(sys.argv[2]))\n";
        self.exec(&["python3", "-c", script, iface, &hex]);
    }

    /// Start tcpdump on `iface` writing the first `count` frames matching `filter` to a pcap.
    /// Returns once tcpdump is listening.
    pub fn capture(&self, iface: &str, filter: &str, count: u32) -> Capture {
        let path = temp_path("capture", "pcap");
        let mut args = vec![
            "tcpdump".to_string(),
            "-i".into(),
            iface.into(),
            "-n".into(),
            "-U".into(),
            "-c".into(),
            count.to_string(),
            "-w".into(),
            path.display().to_string(),
        ];
        args.extend(filter.split_whitespace().map(String::from));
        let mut child = self
            .command(&args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tcpdump in {}: {e}", self.name));
        // tcpdump prints "listening on ..." to stderr once the socket is open.
        let mut err = child.stderr.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        if let Some(e) = err.as_mut() {
            let mut byte = [0u8; 1];
            while Instant::now() < deadline
                && !String::from_utf8_lossy(&seen).contains("listening on")
            {
                match e.read(&mut byte) {
                    Ok(1) => seen.push(byte[0]),
                    _ => break,
                }
            }
        }
        assert!(
            String::from_utf8_lossy(&seen).contains("listening on"),
            "tcpdump did not start: {}",
            String::from_utf8_lossy(&seen)
        );
        Capture {
            child: Some(child),
            path,
            _stderr: err,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// A running tcpdump; its pcap file is removed on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    _stderr: Option<std::process::ChildStderr>,
}

impl Capture {
    /// Wait (up to `timeout`) for tcpdump to have written its frames and exit; return them.
    pub fn frames(mut self, timeout: Duration) -> Vec<Vec<u8>> {
        if let Some(c) = self.child.as_mut() {
            let exited = crate::wait::poll(timeout, || c.try_wait(), |r| matches!(r, Ok(Some(_))));
            if exited.is_err() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.child = None;
        read_pcap(&self.path).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A path in the temp dir unique to this process and call.
pub fn temp_path(stem: &str, ext: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "testkit-{stem}-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The frames of a classic (libpcap) capture file, either byte order, micro or nano seconds.
pub fn read_pcap(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path)?;
    match pcap_frames(&data)? {
        (frames, false) => Ok(frames.into_iter().map(<[u8]>::to_vec).collect()),
        (_, true) => Err(not_pcap()),
    }
}

/// How many whole frames a capture file that is still being written holds so far.
pub fn pcap_frames_so_far(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap_or_default();
    pcap_frames(&data).map_or(0, |(frames, _)| frames.len())
}

fn not_pcap() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "not a pcap file")
}

/// The whole frames in `data`, and whether a frame follows that is cut short.
fn pcap_frames(data: &[u8]) -> std::io::Result<(Vec<&[u8]>, bool)> {
    let magic = data.get(0..4).ok_or_else(not_pcap)?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(not_pcap()),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(at + 8).ok_or_else(not_pcap)? as usize;
        let start = at + 16;
        let Some(frame) = data.get(start..start + caplen) else {
            return Ok((frames, true));
        };
        frames.push(frame);
        at = start + caplen;
    }
    Ok((frames, false))
}

/// A pcap file (Ethernet link type) holding `frames`, removed on drop.
#[derive(Debug)]
pub struct PcapFile {
    pub path: PathBuf,
}

impl PcapFile {
    pub fn write(frames: &[Vec<u8>]) -> std::io::Result<PcapFile> {
        let path = temp_path("frames", "pcap");
        let mut f = std::fs::File::create(&path)?;
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&0i32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&65535u32.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (i, fr) in frames.iter().enumerate() {
            hdr.extend_from_slice(&(i as u32).to_le_bytes());
            hdr.extend_from_slice(&0u32.to_le_bytes());
            hdr.extend_from_slice(&(fr.len() as u32).to_le_bytes());
            hdr.extend_from_slice(&(fr.len() as u32).to_le_bytes());
            hdr.extend_from_slice(fr);
        }
        f.write_all(&hdr)?;
        Ok(PcapFile { path })
    }
}

impl Drop for PcapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_round_trips() {
        let frames = vec![vec![1u8, 2, 3], vec![9u8; 70]];
        let f = PcapFile::write(&frames).unwrap();
        assert_eq!(read_pcap(&f.path).unwrap(), frames);
        let p = f.path.clone();
        drop(f);
        assert!(!p.exists());
    }

    #[test]
    fn namespace_with_veth_captures_a_raw_frame_and_cleans_up() {
        let a = Netns::new("tk");
        let b = Netns::new("tk");
        a.veth("tk0", "tk1", Some(&b));
        let cap = b.capture("tk1", "ether proto 0x88b5", 1);
        // IEEE local experimental ethertype 0x88b5.
        let frame: Vec<u8> = [
            [0xffu8; 6].as_slice(),
            &[2, 0, 0, 0, 0, 1],
            &[0x88, 0xb5],
            &[0x5a; 46],
        ]
        .concat();
        a.send_raw("tk0", &frame);
        let got = cap.frames(Duration::from_secs(5));
        assert_eq!(got, vec![frame]);
        let name = a.name().to_string();
        drop(a);
        assert!(!host(&["ip", "netns", "list"]).contains(&name));
    }
}

/// A veth pair in the host's own namespace (where a DPDK process under test binds
/// `net_af_packet` to it), both ends up and without IPv6 so the kernel sends nothing on its own.
/// Deleted on drop.
#[derive(Debug)]
pub struct HostVeth {
    a: String,
    b: String,
}

impl HostVeth {
    /// Creates `a` ↔ `b` (names up to 15 bytes; make them unique per process).
    pub fn new(a: &str, b: &str) -> HostVeth {
        require_root();
        let _ = Command::new("ip").args(["link", "delete", a]).output();
        host(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        let veth = HostVeth {
            a: a.to_owned(),
            b: b.to_owned(),
        };
        for end in [a, b] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            host(&["ip", "link", "set", end, "up"]);
        }
        veth
    }

    pub fn a(&self) -> &str {
        &self.a
    }

    pub fn b(&self) -> &str {
        &self.b
    }
}

impl Drop for HostVeth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.a])
            .output();
    }
}
