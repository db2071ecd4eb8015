//! The network between the instances and Redis: connections, messages in flight, their
//! delays, cuts and resets, and the notices published to subscribers.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Conn {
    pub(super) gen: u64,
    pub(super) half_closed: bool,
}

#[derive(Debug, Clone)]
pub(super) enum MsgKind {
    Driver(Command),
    Write(String),
}

pub(super) struct Msg {
    pub(super) inst: usize,
    pub(super) kind: MsgKind,
    pub(super) gen: u64,
    pub(super) reply: Option<Reply>,
    pub(super) write_ok: bool,
    /// Its reply reached the client (it is read, however late).
    pub(super) read: bool,
}

impl<'a> Sim<'a> {
    /// One message's delay from or to `inst`, or `None` if it is lost.
    pub(super) fn net(&mut self, inst: usize, dir: Dir) -> Option<u64> {
        if self.insts[inst].blocked(dir) {
            return None;
        }
        let normal = self.normal_delay();
        let (mut loss, mut long) = (0u8, 0u8);
        for (_, l, g) in &self.storms {
            loss = loss.max(*l);
            long = long.max(*g);
        }
        if loss > 0 || long > 0 {
            if self.rng.u8(..100) < loss {
                return None;
            }
            if self.rng.u8(..100) < long {
                return Some(self.rng.u64(50..1_500) * MS);
            }
        }
        Some(normal)
    }

    pub(super) fn send(&mut self, i: usize, conn: Conn, command: Command, timeout: Nanos) {
        let sent_at = self.local(i);
        self.stats.commands += 1;
        self.log(|| format!("i{i} sends {command:?}"));
        let msg = self.msgs.len();
        self.msgs.push(Msg {
            inst: i,
            kind: MsgKind::Driver(command),
            gen: conn.gen,
            reply: None,
            write_ok: false,
            read: false,
        });
        self.insts[i].drv = Drv::Waiting { msg };
        let timeout_at = self.insts[i].real(sent_at + timeout);
        self.at(timeout_at, Ev::Timeout { msg });
        if conn.half_closed {
            return;
        }
        if let Some(d) = self.net(i, Dir::Requests) {
            let now = self.now;
            self.at(now + d, Ev::Arrive { msg });
        }
    }

    pub(super) fn start_connect(&mut self, i: usize, timeout: Nanos) {
        self.insts[i].drv = Drv::Connecting;
        let (ok, delay) = if !self.server_up {
            (false, self.normal_delay())
        } else {
            match (self.net(i, Dir::Requests), self.net(i, Dir::Replies)) {
                (Some(a), Some(b)) if a + b < timeout => (true, a + b),
                _ => (false, timeout),
            }
        };
        let now = self.now;
        self.at(now + delay, Ev::ConnectDone { inst: i, ok });
    }

    pub(super) fn connect_done(&mut self, i: usize, ok: bool) {
        if self.insts[i].drv != Drv::Connecting {
            return;
        }
        if ok && self.server_up {
            let gen = self.server_gen;
            self.insts[i].conn = Some(Conn {
                gen,
                half_closed: false,
            });
            self.log(|| format!("i{i} connected (gen {gen})"));
            self.happen(i, Happened::Connected { generation: 1 });
        } else {
            let error = "connection refused".into();
            self.happen(i, Happened::ConnectFailed { error });
        }
    }

    /// The reply of the driver's command reached the instance.
    pub(super) fn back(&mut self, msg: usize) {
        let m = &self.msgs[msg];
        let i = m.inst;
        match &m.kind {
            MsgKind::Write(token) => {
                let token = token.clone();
                let ok = m.write_ok;
                if !self.insts[i].writer_busy {
                    return;
                }
                self.insts[i].writer_busy = false;
                if !ok {
                    self.log(|| format!("i{i}: fenced write refused"));
                    self.handle(i, Input::WriteRefused { token });
                }
                return;
            }
            MsgKind::Driver(_) => {}
        }
        if self.insts[i].drv != (Drv::Waiting { msg }) {
            return;
        }
        let reply = self.msgs[msg].reply.clone().expect("executed");
        self.log(|| format!("i{i} gets {reply:?}"));
        self.happen(i, Happened::Replied(reply));
    }

    /// A timeout or a reset: the command failed and the connection is dropped.
    pub(super) fn broken(&mut self, msg: usize) {
        let i = self.msgs[msg].inst;
        if let MsgKind::Write(_) = self.msgs[msg].kind {
            if self.insts[i].writer_busy {
                self.insts[i].writer_busy = false;
                self.insts[i].writer_gen = None;
            }
            return;
        }
        if self.insts[i].drv != (Drv::Waiting { msg }) {
            return;
        }
        self.log(|| format!("i{i}: command failed (timeout or reset); disconnected"));
        self.insts[i].conn = None;
        let failed = Happened::Failed {
            error: "timeout or reset".into(),
            drops_connection: true,
            redirect: Redirect::None,
        };
        self.happen(i, failed);
    }

    pub(super) fn arrive(&mut self, msg: usize) {
        let i = self.msgs[msg].inst;
        if !self.server_up || self.msgs[msg].gen != self.server_gen {
            // The connection is gone: the client sees a reset.
            if let Some(d) = self.net(i, Dir::Replies) {
                let at = self.now + d;
                self.at(at, Ev::Reset { msg });
            }
            return;
        }
        self.set_server_time();
        let kind = std::mem::replace(&mut self.msgs[msg].kind, MsgKind::Write(String::new()));
        match &kind {
            MsgKind::Driver(command) => {
                let reply = self.execute(i, command);
                self.log(|| format!("redis runs i{i}'s {} → {reply:?}", name(command)));
                self.msgs[msg].reply = Some(reply);
            }
            MsgKind::Write(token) => {
                let value = format!("{i}");
                let resp = self.model.eval(
                    Script::FencedSet,
                    &[KEYS.lock.as_str(), KEYS.fenced.as_str()],
                    &[token, &value, "60000"],
                );
                let ok = match resp {
                    Resp::Int(1) => true,
                    Resp::Error {
                        ref msg,
                        raised: false,
                    } if msg.starts_with("NOTPRIMARY") => false,
                    other => {
                        self.fail(Kind::ScriptError, format!("fenced_set replied {other:?}"));
                        false
                    }
                };
                self.msgs[msg].write_ok = ok;
                self.log(|| {
                    format!(
                        "redis runs i{i}'s fenced write ({token}): {}",
                        if ok { "done" } else { "refused" }
                    )
                });
                if ok {
                    self.stats.writes_acked += 1;
                    for j in 0..self.insts.len() {
                        if j != i && self.primary_now(j) {
                            let what = format!(
                                "i{i}'s fenced write with token {token} took effect while i{j} is primary (view {:?}, i{i}'s view {:?})",
                                self.insts[j].view, self.insts[i].view
                            );
                            self.fail(Kind::FencedWrite, what);
                        }
                    }
                }
            }
        }
        self.msgs[msg].kind = kind;
        self.deliver_notices();
        if let Some(d) = self.net(i, Dir::Replies) {
            let at = self.now + d;
            self.at(at, Ev::Back { msg });
        }
    }

    pub(super) fn deliver_notices(&mut self) {
        let published = std::mem::take(&mut self.model.space.borrow_mut().published);
        for (channel, _) in published {
            if channel != KEYS.channel.as_str() {
                continue;
            }
            for j in 0..self.insts.len() {
                if self.insts[j].alive {
                    if let Some(d) = self.net(j, Dir::Replies) {
                        let at = self.now + d;
                        self.at(at, Ev::Notice { inst: j });
                    }
                }
            }
        }
    }

    pub(super) fn reset_connections(&mut self) {
        self.server_gen += 1;
        // Commands waiting on a connection of the old server see it reset.
        for i in 0..self.insts.len() {
            if let Drv::Waiting { msg } = self.insts[i].drv {
                if let Some(d) = self.net(i, Dir::Replies) {
                    let at = self.now + d;
                    self.at(at, Ev::Reset { msg });
                }
            }
        }
    }

    /// Ends instance `i`'s open interval now.
    pub(super) fn cut(&mut self, i: usize) {
        if let Some((a, b)) = self.insts[i].open.take() {
            let b = b.min(self.now);
            if a < b {
                self.finalize(i, a, b);
            }
        }
    }
}
