//! Packet captures on the links between nodes (tcpdump, classic pcap with
//! Ethernet framing) and what the tests ask of them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::host::Proc;

/// A running tcpdump on one interface of one namespace.
pub struct Capture {
    proc: Proc,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(netns: &str, interface: &str, dir: &Path) -> Capture {
        let file = dir.join(format!("{netns}-{interface}.pcap"));
        let file_arg = file.display().to_string();
        let proc = Proc::spawn(
            "tcpdump",
            netns,
            Path::new("/usr/bin/tcpdump"),
            &[
                "-i",
                interface,
                "--immediate-mode",
                "-U",
                "-n",
                "-s",
                "0",
                "-w",
                &file_arg,
                "tcp",
            ],
            &[],
            dir.join(format!("{netns}-{interface}.tcpdump.log")),
        );
        // tcpdump says "listening on" once the capture is open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !proc.logs().contains("listening on") {
            assert!(
                std::time::Instant::now() < deadline,
                "tcpdump did not start: {}",
                proc.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Capture { proc, file }
    }

    /// Stops the capture and reads every TCP segment it saw.
    pub fn finish(mut self) -> Vec<Segment> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.proc.stop();
        let bytes = std::fs::read(&self.file).expect("read the capture");
        eprintln!(
            "tcpdump: {} ({} bytes)",
            self.proc.logs().trim(),
            bytes.len()
        );
        parse_pcap(&bytes)
    }
}

/// One TCP segment.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub syn: bool,
    pub payload: Vec<u8>,
}

/// Parses a classic pcap file with Ethernet (linktype 1) framing; other
/// frames are skipped.
pub fn parse_pcap(bytes: &[u8]) -> Vec<Segment> {
    assert!(bytes.len() >= 24, "capture file too short");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        other => panic!("not a pcap file (magic {other:#x})"),
    };
    let u32_at = |b: &[u8], at: usize| {
        let a: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32_at(bytes, 20), 1, "expected Ethernet framing");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = u32_at(bytes, at + 8) as usize;
        let frame = &bytes[at + 16..(at + 16 + caplen).min(bytes.len())];
        at += 16 + caplen;
        if let Some(s) = tcp_segment(frame) {
            out.push(s);
        }
    }
    out
}

fn tcp_segment(frame: &[u8]) -> Option<Segment> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[9] != 6 || ip.len() < ihl + 20 {
        return None;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = &ip[ihl..total.min(ip.len())];
    let offset = ((tcp[12] >> 4) as usize) * 4;
    Some(Segment {
        src: (src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: (dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        syn: tcp[13] & 0x02 != 0,
        payload: tcp.get(offset..).unwrap_or_default().to_vec(),
    })
}

/// Whether `needle` appears in any segment's payload.
pub fn contains(segments: &[Segment], needle: &[u8]) -> bool {
    segments
        .iter()
        .any(|s| s.payload.windows(needle.len()).any(|w| w == needle))
}

/// Connections to `port`, each with the first payload bytes each way:
/// (client → server, server → client), keyed by the client's address.
pub type Flows = BTreeMap<((Ipv4Addr, u16), (Ipv4Addr, u16)), (Vec<u8>, Vec<u8>)>;

pub fn flows_to_port(segments: &[Segment], port: u16) -> Flows {
    let mut flows = Flows::new();
    for s in segments {
        if s.dst.1 == port {
            let e = flows.entry((s.src, s.dst)).or_default();
            if e.0.is_empty() {
                e.0 = s.payload.clone();
            }
        } else if s.src.1 == port {
            let e = flows.entry((s.dst, s.src)).or_default();
            if e.1.is_empty() {
                e.1 = s.payload.clone();
            }
        }
    }
    flows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ethernet_tcp_frame() {
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        pcap.extend([0xff, 0xff, 0, 0, 1, 0, 0, 0]);
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let payload = b"\x16\x03\x01hello";
        let total = (20 + 20 + payload.len()) as u16;
        frame.extend([
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            6,
            0,
            0,
        ]);
        frame.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend([
            0x9c, 0x40, 0x3a, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0,
        ]);
        frame.extend(payload);
        pcap.extend([0u8; 8]);
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend(&frame);
        let segs = parse_pcap(&pcap);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].dst, (Ipv4Addr::new(10, 0, 0, 2), 15000));
        assert!(contains(&segs, b"hello") && !contains(&segs, b"secret"));
        let flows = flows_to_port(&segs, 15000);
        assert_eq!(flows.values().next().unwrap().0[0], 0x16);
    }
}
