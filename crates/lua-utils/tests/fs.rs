//! `kumo.fs.read_dir`, `kumo.fs.glob`, `kumo.fs.uncached_glob` and the
//! `kumo.*` names, through the policy engine.

mod common;

use common::load;

/// Files the tests glob over, created by the policy itself.
const SETUP: &str = r#"
    local function touch(p) local f = assert(io.open(p, 'w')); f:write('x'); f:close() end
    os.execute("mkdir -p '@DIR@/conf/sub'")
    touch('@DIR@/conf/a.toml'); touch('@DIR@/conf/b.json'); touch('@DIR@/conf/c.txt')
    touch('@DIR@/conf/sub/d.toml'); touch('@DIR@/conf/.hidden.toml')
"#;

#[tokio::test]
async fn read_dir_lists_every_entry_with_its_directory_sorted() {
    let p = load(&format!(
        "{SETUP}\nkumo.on('t', function() return table.concat(kumo.fs.read_dir('@DIR@/conf'), ',') end)\n\
         kumo.on('same', function() return kumo.read_dir == kumo.fs.read_dir end)\n"
    ))
    .await;
    let d = format!("{}/conf", p.dir().display());
    assert_eq!(
        p.call::<String>("t").await,
        format!("{d}/.hidden.toml,{d}/a.toml,{d}/b.json,{d}/c.txt,{d}/sub")
    );
    assert!(p.call::<bool>("same").await);
}

#[tokio::test]
async fn read_dir_of_a_missing_directory_names_it_at_the_policy_line() {
    let p = load("kumo.on('t', function()\n  return (kumo.read_dir('/no/such/dir'))\nend)\n").await;
    let err = p.call_err("t").await;
    assert!(
        err.starts_with(&format!(
            "{}:2: kumo.fs.read_dir: cannot read directory /no/such/dir",
            p.path
        )),
        "{err}"
    );
}

#[tokio::test]
async fn glob_matches_alternatives_and_recursion_relative_to_a_directory() {
    let p = load(&format!(
        "{SETUP}\n\
         kumo.on('alt', function() return table.concat(kumo.glob('*.{{toml,json}}', '@DIR@/conf'), ',') end)\n\
         kumo.on('deep', function() return table.concat(kumo.fs.glob('**/*.toml', '@DIR@/conf'), ',') end)\n\
         kumo.on('abs', function() return table.concat(kumo.fs.uncached_glob('@DIR@/conf/*.txt'), ',') end)\n\
         kumo.on('none', function() return #kumo.fs.glob('@DIR@/nowhere/*.toml') end)\n"
    ))
    .await;
    assert_eq!(p.call::<String>("alt").await, "a.toml,b.json");
    assert_eq!(p.call::<String>("deep").await, "a.toml,sub/d.toml");
    assert_eq!(
        p.call::<String>("abs").await,
        format!("{}/conf/c.txt", p.dir().display())
    );
    assert_eq!(p.call::<i64>("none").await, 0);
}

#[tokio::test]
async fn glob_serves_cached_results_until_the_ttl_expires_and_uncached_glob_never_does() {
    let p = load(&format!(
        "{SETUP}\n\
         kumo.on('cached', function(ttl) return #kumo.glob('*.new', '@DIR@/conf', ttl) end)\n\
         kumo.on('fresh', function() return #kumo.uncached_glob('*.new', '@DIR@/conf') end)\n\
         kumo.on('add', function() local f = io.open('@DIR@/conf/x.new', 'w'); f:write('x'); f:close(); return true end)\n"
    ))
    .await;
    let cached = |ttl: f64| {
        let engine = p.engine.clone();
        async move { engine.call::<i64>("cached", ttl).await.unwrap().unwrap() }
    };
    assert_eq!(cached(0.5).await, 0);
    assert!(p.call::<bool>("add").await);
    assert_eq!(cached(0.5).await, 0, "the cached result, within its TTL");
    assert_eq!(p.call::<i64>("fresh").await, 1);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(cached(0.5).await, 1, "a new walk once the TTL has passed");
}

#[tokio::test]
async fn a_bad_glob_pattern_is_named() {
    let p = load("kumo.on('t', function()\n  return (kumo.fs.glob('[z-a'))\nend)\n").await;
    let err = p.call_err("t").await;
    assert!(
        err.starts_with(&format!(
            "{}:2: kumo.fs.glob: invalid glob pattern \"[z-a\"",
            p.path
        )),
        "{err}"
    );
}

#[tokio::test]
async fn metadata_describes_a_file_and_a_symlink_itself() {
    let p = load(&format!(
        "{SETUP}\nos.execute(\"ln -s '@DIR@/conf/a.toml' '@DIR@/link'\")\n\
         kumo.on('t', function()\n\
           local m = kumo.fs.metadata_for_path('@DIR@/link')\n\
           local l = kumo.fs.symlink_metadata_for_path('@DIR@/link')\n\
           local d = kumo.fs.metadata_for_path('@DIR@/conf')\n\
           return table.concat({{ tostring(m.is_file), tostring(m.is_symlink), m.len, m.size,\n\
             tostring(l.is_symlink), tostring(d.is_dir), tostring(m.mtime.year >= 2024),\n\
             m.path }}, ',')\n\
         end)\n\
         kumo.on('missing', function()\n  return (kumo.fs.metadata_for_path('/no/such'))\nend)\n"
    ))
    .await;
    assert_eq!(
        p.call::<String>("t").await,
        format!("true,false,1,1,true,true,true,{}/link", p.dir().display())
    );
    let err = p.call_err("missing").await;
    assert!(
        err.contains("kumo.fs.metadata_for_path: cannot stat /no/such"),
        "{err}"
    );
}

#[tokio::test]
async fn an_opened_file_reads_writes_seeks_and_closes() {
    let p = load(
        r#"
        kumo.on('t', function()
          local f = kumo.fs.open('@DIR@/f.bin', 'w+')
          f:write 'hello there'
          f:write '\0!'
          assert(f:seek 'set' == 0)
          assert(f:read(5) == 'hello')
          assert(f:read() == ' there\0!')
          assert(f:seek('end') == 13)
          assert(f:seek('set', 6) == 6 and f:read(5) == 'there')
          f:close()
          f:close()
          local ok, err = pcall(f.read, f)
          assert(not ok and tostring(err):find('is closed'), tostring(err))
          local a = kumo.fs.open('@DIR@/f.bin', 'a')
          a:write 'X'
          a:close()
          return kumo.fs.open('@DIR@/f.bin'):read()
        end)
        kumo.on('missing', function() return kumo.fs.open('@DIR@/none.txt', 'r') end)
        kumo.on('mode', function() return kumo.fs.open('@DIR@/x', 'rw') end)
        "#,
    )
    .await;
    assert_eq!(p.call::<String>("t").await, "hello there\0!X");
    let err = p.call_err("missing").await;
    assert!(
        err.contains("kumo.fs.open: cannot open") && err.contains("none.txt"),
        "{err}"
    );
    let err = p.call_err("mode").await;
    assert!(err.contains("kumo.fs.open: unknown mode \"rw\""), "{err}");
}
