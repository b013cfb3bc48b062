//! The README's configuration table is generated from the settings'
//! declarations, so it cannot drift from the code: this test fails when it
//! does, and `UPDATE_README=1 cargo nextest run -E 'test(readme)'` rewrites it.

use std::collections::BTreeSet;

use quill_platform::config::{Setting, markdown_table};

const BEGIN: &str =
    "<!-- settings:begin: generated from the declarations by gateway/tests/it/readme.rs -->\n";
const END: &str = "<!-- settings:end -->";

/// Every declared setting, by who reads it.
fn groups() -> [(&'static str, &'static [Setting]); 6] {
    [
        (
            "any process (see what it does)",
            quill_platform::settings::ALL,
        ),
        ("the services", quill_events::config::ALL),
        ("auth", quill_auth::config::ALL),
        ("content", quill_content::config::ALL),
        ("notification", quill_notification::config::ALL),
        ("gateway", quill_gateway::config::ALL),
    ]
}

#[test]
fn every_setting_is_declared_once() {
    let mut seen = BTreeSet::new();
    for (_, settings) in groups() {
        for setting in settings {
            assert!(
                seen.insert(setting.name),
                "{} is declared twice",
                setting.name
            );
            assert!(
                !setting.description().is_empty(),
                "{} has no doc",
                setting.name
            );
        }
    }
}

#[test]
fn the_configuration_table_is_generated_from_the_declarations() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find(BEGIN)
        .expect("the README marks where the table begins")
        + BEGIN.len();
    let end = start + readme[start..].find(END).expect("and where it ends");
    let table = markdown_table(&groups());
    if readme[start..end] == table {
        return;
    }
    if std::env::var("UPDATE_README").is_ok_and(|v| v == "1") {
        std::fs::write(
            path,
            format!("{}{table}{}", &readme[..start], &readme[end..]),
        )
        .expect("README.md written");
        return;
    }
    panic!(
        "README.md's configuration table differs from the settings declared in the code; \
         run UPDATE_README=1 cargo nextest run -p quill-gateway -E 'test(readme)'"
    );
}

/// What the table promises: with nothing set, every process starts from
/// the declared defaults.
#[test]
fn every_config_loads_from_the_declared_defaults() {
    use quill_server::ServiceConfig as _;
    quill_auth::Config::from_env().expect("auth");
    quill_content::Config::from_env().expect("content");
    quill_notification::Config::from_env().expect("notification");
    quill_gateway::Config::from_env().expect("gateway");
}

/// Settings that carry credentials never show them when a config is
/// printed (`{:?}` in a log line or a panic).
#[test]
fn printed_configs_show_no_credentials() {
    use quill_server::ServiceConfig as _;
    const PASSWORD: &str = "hunter2-not-in-logs";
    let redis = format!("redis://:{PASSWORD}@redis:6379").into();
    let amqp = format!("amqp://quill:{PASSWORD}@rabbitmq:5672/%2f").into();
    let database = |name: &str| format!("postgres://quill:{PASSWORD}@db:5432/{name}").into();

    let mut auth = quill_auth::Config::from_env().expect("auth");
    auth.authn.redis_url = redis;
    auth.events.amqp_url = amqp;
    auth.server.database.url = database("quill_auth");
    auth.signing_key_pem = Some(PASSWORD.to_owned().into());
    let mut content = quill_content::Config::from_env().expect("content");
    content.server.database.url = database("quill_content");
    content.cursor_secret = PASSWORD.to_owned().into();
    let mut gateway = quill_gateway::Config::from_env().expect("gateway");
    gateway.authn.redis_url = format!("redis://:{PASSWORD}@redis:6379").into();

    for printed in [
        format!("{auth:?}"),
        format!("{content:?}"),
        format!("{gateway:?}"),
    ] {
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
}
