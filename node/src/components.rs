//! Explicit registration of every component crate: add a line here to make a
//! new transport, service or persister available to the config.

use civkit_framework::Registry;

/// The registry with every component this build ships.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    civkit_sled::register(&mut r);
    civkit_postgres::register(&mut r);
    civkit_nostr_ws::register(&mut r);
    civkit_bolt8::register(&mut r);
    civkit_onion::register(&mut r);
    civkit_tor::register(&mut r);
    civkit_plugin_pow::register(&mut r);
    civkit_plugin_process::register(&mut r);
    civkit_board::register(&mut r);
    civkit_credentials::register(&mut r);
    civkit_mainstay::register(&mut r);
    civkit_rank::register(&mut r);
    r
}
