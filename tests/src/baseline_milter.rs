//! The cheapest milter that still does what the ringlog milter asks of Postfix: it negotiates
//! the same protocol steps (no DATA or unknown commands, no reply before the end of message),
//! reads every packet, and at the end of message adds one header field of the size of an
//! `X-Ringlog` field and lets the message through. It records nothing.
//!
//! The Postfix test runs it beside the real milter, so that the throughput comparison shows how
//! much of the cost is Postfix's own milter client (connection, negotiation, streaming the
//! message, applying the header) and how much is ringlog's work. Blocking I/O, one thread per
//! connection: no runtime, no channel, no hand-over between threads.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Protocol steps the milter leaves out or does not answer (the bits of `SMFIP_NO*` and
/// `SMFIP_NR_*`; the same set the ringlog milter asks for when it may not refuse recipients).
const STEPS: u32 = 0x100 /* NOUNKNOWN */
    | 0x200 /* NODATA */
    | 0x1000 /* NR_CONN */
    | 0x2000 /* NR_HELO */
    | 0x4000 /* NR_MAIL */
    | 0x8000 /* NR_RCPT */
    | 0x10000 /* NR_DATA */
    | 0x20000 /* NR_UNKN */
    | 0x40000 /* NR_EOH */
    | 0x80000 /* NR_BODY */
    | 0x80 /* NR_HDR */
    | 0x100000 /* HDR_LEADSPC */;
/// Action bit: may add header fields.
const ADD_HEADERS: u32 = 0x01;
/// Largest packet read (as the ringlog milter).
const MAX_PACKET: usize = 1 << 20;

/// Starts the milter on a free loopback port in a background thread; returns the port. The
/// thread lives as long as the test process.
pub fn start() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the baseline milter");
    let port = listener.local_addr().expect("baseline milter address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    port
}

fn packet(out: &mut impl Write, code: u8, data: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&[code])?;
    out.write_all(data)
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut rd = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut wr = BufWriter::new(stream);
    let mut buf = Vec::new();
    // As in the ringlog milter: Postfix leaves Nagle on and we answer nothing before the end
    // of message, so without quick ACKs every packet would wait for a delayed ACK (40 ms).
    let arm = |rd: &BufReader<TcpStream>, want: usize| {
        if rd.buffer().len() < want {
            let _ = socket2::SockRef::from(rd.get_ref()).set_tcp_quickack(true);
        }
    };
    loop {
        arm(&rd, 4);
        let mut len = [0u8; 4];
        if rd.read_exact(&mut len).is_err() {
            return Ok(()); // closed between (or inside) packets: done
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_PACKET {
            return Ok(());
        }
        arm(&rd, n);
        buf.resize(n, 0);
        rd.read_exact(&mut buf)?;
        match buf[0] {
            b'O' => {
                // Version 6, our actions and steps; no macro lists of our own.
                let mut d = Vec::with_capacity(12);
                d.extend_from_slice(&6u32.to_be_bytes());
                d.extend_from_slice(&ADD_HEADERS.to_be_bytes());
                d.extend_from_slice(&STEPS.to_be_bytes());
                packet(&mut wr, b'O', &d)?;
            }
            b'E' => {
                // About as long as the X-Ringlog value for a customer's message.
                // (A leading space: with SMFIP_HDR_LEADSPC Postfix adds none after the colon.)
                let value = " isp-a.example; index=123456; mfp1=0000000000000000000000000000000000000000000000000000000000000000; trust=trusted; prev=customer";
                let mut d = b"X-Baseline-Milter\0".to_vec();
                d.extend_from_slice(value.as_bytes());
                d.push(0);
                packet(&mut wr, b'h', &d)?;
                packet(&mut wr, b'c', &[])?;
            }
            b'Q' => return Ok(()),
            // Macros, connect, helo, mail, rcpt, headers, end of headers, body, abort, quit
            // for a new session: nothing to answer.
            _ => {}
        }
        wr.flush()?;
    }
}
