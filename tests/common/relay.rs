//! A fault-injecting TCP relay in front of a real memcached: the server is real, the network
//! path misbehaves on command. Client→server bytes always pass; server→client bytes pass
//! unless a [`Fault`] says otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What the relay does with the server's next answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward as is.
    Pass,
    /// Send these bytes instead of the next chunk the server sends, then pass again.
    Replace(Vec<u8>),
    /// Hold the next chunk this long, then pass again.
    DelayOnce(Duration),
    /// Hold the next chunk this long, then hold everything after it (a server that answers
    /// once, late, then stalls).
    DelayThenHold(Duration),
    /// Hold every chunk until the fault changes, then deliver them in order (a stalled server
    /// or network path: TCP loses nothing, it only waits).
    Hold,
}

struct State {
    fault: Fault,
}

/// A relay on a free loopback port; threads end when the relay is dropped and its sockets close.
pub struct Relay {
    /// The port clients (memroute) connect to.
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:port` → `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let state = Arc::new((Mutex::new(State { fault: Fault::Pass }), Condvar::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (st, cs) = (state.clone(), conns.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut list = cs.lock().unwrap();
                    list.push(client.try_clone().expect("clone"));
                    list.push(server.try_clone().expect("clone"));
                }
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                thread::spawn(move || pump_up(client, server));
                let st = st.clone();
                thread::spawn(move || pump_down(s2, c2, st));
            }
        });
        Relay { port, state, conns }
    }

    /// `127.0.0.1:port` for a config.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sets what happens to the server's next answers.
    pub fn set(&self, fault: Fault) {
        let (lock, cvar) = &*self.state;
        lock.lock().unwrap().fault = fault;
        cvar.notify_all();
    }

    /// The fault in force (a one-shot fault turns back into [`Fault::Pass`] once applied).
    pub fn fault(&self) -> Fault {
        self.state.0.lock().unwrap().fault.clone()
    }

    /// Closes every connection relayed so far (both sides).
    pub fn close_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.set(Fault::Pass);
        self.close_all();
        // Unblock the accept loop so its thread ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump_up(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn pump_down(mut from: TcpStream, mut to: TcpStream, state: Arc<(Mutex<State>, Condvar)>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fault = {
            let (lock, cvar) = &*state;
            let mut st = lock.lock().unwrap();
            while st.fault == Fault::Hold {
                st = cvar.wait(st).unwrap();
            }
            let f = st.fault.clone();
            st.fault = match &f {
                Fault::Replace(_) | Fault::DelayOnce(_) => Fault::Pass,
                Fault::DelayThenHold(_) => Fault::Hold,
                other => other.clone(),
            };
            f
        };
        let out: &[u8] = match &fault {
            Fault::Replace(bytes) => bytes,
            Fault::DelayOnce(d) | Fault::DelayThenHold(d) => {
                thread::sleep(*d);
                &buf[..n]
            }
            _ => &buf[..n],
        };
        if to.write_all(out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
