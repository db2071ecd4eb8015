//! The Lua script registry: every fenced write and lease step is one script, compiled into
//! the library from `src/scripts/*.lua` and called by SHA (`EVALSHA`); redis-rs loads a
//! script once when the server does not know it yet.

use std::sync::LazyLock;

use redis::Connection;

use super::errors::describe;

pub(crate) struct Scripts {
    pub lease_take: redis::Script,
    pub lease_renew: redis::Script,
    pub lease_observe: redis::Script,
    pub lease_release: redis::Script,
    pub fenced_set: redis::Script,
    pub positions_write: redis::Script,
    pub positions_load: redis::Script,
    pub positions_adopt: redis::Script,
    pub bot_status: redis::Script,
    pub stalls_publish: redis::Script,
}

/// The scripts' sources, in the field order of [`Scripts`].
const SCRIPT_SOURCES: [&str; 10] = [
    include_str!("../scripts/lease_take.lua"),
    include_str!("../scripts/lease_renew.lua"),
    include_str!("../scripts/lease_observe.lua"),
    include_str!("../scripts/lease_release.lua"),
    include_str!("../scripts/fenced_set.lua"),
    include_str!("../scripts/positions_write.lua"),
    include_str!("../scripts/positions_load.lua"),
    include_str!("../scripts/positions_adopt.lua"),
    include_str!("../scripts/bot_status.lua"),
    include_str!("../scripts/stalls_publish.lua"),
];

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let [lease_take, lease_renew, lease_observe, lease_release, fenced_set, positions_write, positions_load, positions_adopt, bot_status, stalls_publish] =
        SCRIPT_SOURCES.map(redis::Script::new);
    Scripts {
        lease_take,
        lease_renew,
        lease_observe,
        lease_release,
        fenced_set,
        positions_write,
        positions_load,
        positions_adopt,
        bot_status,
        stalls_publish,
    }
});

/// Loads every script on a new connection, so a script call never meets `NOSCRIPT` (a new
/// master after a failover, a restarted server) and its `WAIT` is not sent twice. A failure
/// here is left to the calls themselves, which load a missing script by themselves.
pub(super) fn preload_scripts(conn: &mut Connection) {
    let mut pipe = redis::pipe();
    for source in SCRIPT_SOURCES {
        pipe.cmd("SCRIPT").arg("LOAD").arg(source);
    }
    if let Err(err) = pipe.query::<Vec<String>>(conn) {
        crate::relay::log_own!(
            Debug,
            "could not preload the Lua scripts: {}",
            describe(&err)
        );
    }
}
