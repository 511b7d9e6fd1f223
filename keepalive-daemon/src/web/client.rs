//! `keepalive-daemon connections`: fetches GET /connections from a running daemon and
//! prints it as a table.

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use keepalive_daemon::exporter::connections::{self, Listing};

const TIMEOUT: Duration = Duration::from_secs(10);

pub fn print_connections(address: &str, limit: usize) -> anyhow::Result<()> {
    let addr = address
        .to_socket_addrs()
        .with_context(|| format!("resolving --web.address {address}"))?
        .next()
        .ok_or_else(|| anyhow!("--web.address {address} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| {
        format!("cannot reach keepalive-daemon at {addr}: is it running? (pass --web.address)")
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let request = format!(
        "GET /connections?limit={limit} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .context("reading the daemon's answer")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!(
            "GET /connections from {addr} answered {status}: {}",
            body.trim()
        );
    }
    let listing: Listing = serde_json::from_str(body).context("parsing GET /connections")?;
    print!("{}", connections::table(&listing));
    Ok(())
}
