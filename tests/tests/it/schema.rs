//! `schema.graphql` is exactly what `flowtrace schema` prints.

#[test]
fn checked_in_schema_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = flowtrace::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema.graphql");
        return;
    }
    assert!(
        checked_in == generated,
        "schema.graphql is out of date: run `cargo run -p flowtrace -- schema > schema.graphql` (or UPDATE_SCHEMA=1 cargo test)"
    );
}
