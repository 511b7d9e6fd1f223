//! Builds Ethernet/IP/TCP frames for the host tests.
use crate::packet::TCP_ACK;

#[derive(Clone, Copy, Debug)]
pub enum Ip {
    V4,
    V6,
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub ip: Ip,
    vlans: Vec<u16>,
    ethertype: Option<u16>,
    protocol: u8,
    ip_options: usize,
    frag: u16,
    hop_by_hop: bool,
    fragment_header: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    tcp_options: usize,
    payload: Vec<u8>,
}

impl Frame {
    fn new(ip: Ip) -> Frame {
        Frame {
            ip,
            vlans: Vec::new(),
            ethertype: None,
            protocol: 6,
            ip_options: 0,
            frag: 0,
            hop_by_hop: false,
            fragment_header: false,
            seq: 1,
            ack: 1,
            flags: TCP_ACK,
            window: 1000,
            tcp_options: 0,
            payload: Vec::new(),
        }
    }
    pub fn v4() -> Frame {
        Frame::new(Ip::V4)
    }
    pub fn v6() -> Frame {
        Frame::new(Ip::V6)
    }
    pub fn vlan(mut self, id: u16) -> Frame {
        self.vlans.push(id);
        self
    }
    pub fn ethertype(mut self, t: u16) -> Frame {
        self.ethertype = Some(t);
        self
    }
    pub fn protocol(mut self, p: u8) -> Frame {
        self.protocol = p;
        self
    }
    pub fn ip_options(mut self, bytes: usize) -> Frame {
        self.ip_options = bytes;
        self
    }
    pub fn ipv4_frag(mut self, v: u16) -> Frame {
        self.frag = v;
        self
    }
    pub fn hop_by_hop(mut self) -> Frame {
        self.hop_by_hop = true;
        self
    }
    pub fn fragment_header(mut self) -> Frame {
        self.fragment_header = true;
        self
    }
    pub fn seq(mut self, v: u32) -> Frame {
        self.seq = v;
        self
    }
    pub fn ack(mut self, v: u32) -> Frame {
        self.ack = v;
        self
    }
    pub fn flags(mut self, v: u8) -> Frame {
        self.flags = v;
        self
    }
    pub fn window(mut self, v: u16) -> Frame {
        self.window = v;
        self
    }
    pub fn tcp_options(mut self, bytes: usize) -> Frame {
        self.tcp_options = bytes;
        self
    }
    pub fn payload(mut self, p: &[u8]) -> Frame {
        self.payload = p.to_vec();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&40000u16.to_be_bytes());
        tcp.extend_from_slice(&5432u16.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push((((20 + self.tcp_options) / 4) as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0; 4]); // checksum, urgent pointer
        tcp.extend(std::iter::repeat_n(1u8, self.tcp_options)); // NOPs
        tcp.extend_from_slice(&self.payload);

        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for id in &self.vlans {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        match self.ip {
            Ip::V4 => {
                f.extend_from_slice(&self.ethertype.unwrap_or(0x0800).to_be_bytes());
                let ihl = 20 + self.ip_options;
                f.push(0x40 | (ihl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&((ihl + tcp.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&self.frag.to_be_bytes());
                f.extend_from_slice(&[64, self.protocol, 0, 0]);
                f.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
                f.extend(std::iter::repeat_n(1u8, self.ip_options));
            }
            Ip::V6 => {
                f.extend_from_slice(&self.ethertype.unwrap_or(0x86dd).to_be_bytes());
                let mut ext = Vec::new();
                let mut first = self.protocol;
                if self.fragment_header {
                    ext.extend_from_slice(&[first, 0, 0, 0, 0, 0, 0, 1]);
                    first = 44;
                }
                if self.hop_by_hop {
                    let mut h = vec![first, 0, 1, 4, 0, 0, 0, 0]; // PadN option
                    h.append(&mut ext);
                    ext = h;
                    first = 0;
                }
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[first, 64]);
                f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
                f.extend_from_slice(&ext);
            }
        }
        f.extend_from_slice(&tcp);
        f
    }
}
