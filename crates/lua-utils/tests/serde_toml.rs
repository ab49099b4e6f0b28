//! `kumo.toml_load`, `toml_parse`, `toml_encode`, `toml_encode_pretty` and
//! their `kumo.serde.*` names, through the policy engine.

mod common;

use common::{load, load_err};

#[tokio::test]
async fn toml_load_reads_a_file_into_tables_arrays_and_scalars() {
    let p = load(
        r#"
        local f = io.open('@DIR@/queue.toml', 'w')
        f:write([==[
title = "shaping"
[queues."example.com"]
max_age = "3 days"
retry = [1, 2.5, true]
when = 1979-05-27T07:32:00Z
[[sources]]
name = "a"
[[sources]]
name = "b"
]==])
        f:close()
        kumo.on('t', function()
          local d = kumo.toml_load('@DIR@/queue.toml')
          local q = d.queues['example.com']
          return table.concat({
            d.title, q.max_age, tostring(q.retry[1]), tostring(q.retry[2]),
            tostring(q.retry[3]), q.when, d.sources[1].name, d.sources[2].name,
            math.type(q.retry[1]), kumo.json_encode(d.sources),
          }, '|')
        end)
        "#,
    )
    .await;
    assert_eq!(
        p.call::<String>("t").await,
        "shaping|3 days|1|2.5|true|1979-05-27T07:32:00Z|a|b|integer|[{\"name\":\"a\"},{\"name\":\"b\"}]"
    );
}

#[tokio::test]
async fn a_bad_toml_file_is_named_with_its_line_and_column_at_the_policy_line() {
    let p = load(
        "local f = io.open('@DIR@/bad.toml', 'w')\n\
         f:write('a = 1\\n\\nb = = 2\\n')\n\
         f:close()\n\
         kumo.on('t', function()\n\
           return (kumo.toml_load('@DIR@/bad.toml'))\n\
         end)\n",
    )
    .await;
    let err = p.call_err("t").await;
    let file = format!("{}/bad.toml", p.dir().display());
    assert!(
        err.starts_with(&format!("{}:5: kumo.toml_load: {file}:3:", p.path)),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_toml_file_is_named() {
    let p =
        load("kumo.on('t', function() return (kumo.serde.toml_load('/no/such.toml')) end)\n").await;
    let err = p.call_err("t").await;
    assert!(err.starts_with(&format!("{}:1: ", p.path)), "{err}");
    assert!(err.contains("cannot read /no/such.toml"), "{err}");
}

#[tokio::test]
async fn toml_parse_errors_give_the_text_line_and_column_at_the_policy_line() {
    let (err, path) = load_err("\nlocal d = kumo.toml_parse('x = 1\\ny = [1,\\n')\n").await;
    assert!(
        err.contains(&format!("{path}:2: kumo.toml_parse: 2:8: unclosed array")),
        "{err}"
    );
}

#[tokio::test]
async fn encode_then_parse_round_trips_and_the_two_names_are_one_function() {
    let p = load(
        r#"
        kumo.on('t', function()
          assert(kumo.toml_encode == kumo.serde.toml_encode)
          assert(kumo.toml_parse == kumo.serde.toml_parse)
          assert(kumo.toml_load == kumo.serde.toml_load)
          assert(kumo.toml_encode_pretty == kumo.serde.toml_encode_pretty)
          local v = { name = 'x', n = 3, f = 1.5, ok = false, list = { 'a', 'b' },
                      sub = { deep = { k = 'v' } }, empty = {} }
          local back = kumo.toml_parse(kumo.toml_encode(v))
          local pretty = kumo.toml_parse(kumo.toml_encode_pretty(v))
          return kumo.json_encode(back) == kumo.json_encode(pretty)
            and back.name == 'x' and back.n == 3 and back.f == 1.5 and back.ok == false
            and back.list[2] == 'b' and back.sub.deep.k == 'v' and next(back.empty) == nil
        end)
        kumo.on('text', function() return kumo.toml_encode({ b = 2, a = 'x' }) end)
        "#,
    )
    .await;
    assert!(p.call::<bool>("t").await);
    assert_eq!(p.call::<String>("text").await, "a = \"x\"\nb = 2\n");
}

#[tokio::test]
async fn encoding_refuses_non_tables_and_functions_naming_the_key() {
    let p = load(
        "kumo.on('scalar', function() return (kumo.toml_encode(42)) end)\n\
         kumo.on('func', function() return (kumo.toml_encode({ a = { b = print } })) end)\n",
    )
    .await;
    let err = p.call_err("scalar").await;
    assert!(
        err.starts_with(&format!("{}:1: kumo.toml_encode: ", p.path))
            && err.contains("must be a table, got integer"),
        "{err}"
    );
    let err = p.call_err("func").await;
    assert!(
        err.starts_with(&format!("{}:2: ", p.path)) && err.contains("function value at 'a.b'"),
        "{err}"
    );
}
