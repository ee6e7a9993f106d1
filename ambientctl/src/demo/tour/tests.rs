use super::*;

/// Commands of the page that are not tour steps: how to bring the mesh up
/// and down. `cargo xtask ci` runs each of them (`cargo xtask demo --check`
/// builds, then runs `ambientctl demo up`, `check` and `down`).
const SETUP: [&str; 3] = [
    "cargo xtask demo",
    "cargo build\nexport PATH=$PWD/target/debug:$PATH\nambientctl demo up",
    "ambientctl demo check",
];
const TEARDOWN: [&str; 1] = ["ambientctl demo down"];

/// The contents of the page's ```sh blocks, in order.
fn sh_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

#[test]
fn the_getting_started_page_shows_exactly_the_commands_the_tour_runs() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/getting-started.md"
    ))
    .expect("docs/getting-started.md");
    let expected: Vec<String> = SETUP
        .iter()
        .copied()
        .chain(STEPS.iter().map(|s| s.command))
        .chain(TEARDOWN)
        .map(str::to_string)
        .collect();
    let shown = sh_blocks(&page);
    for (i, (shown, expected)) in shown.iter().zip(&expected).enumerate() {
        assert_eq!(shown, expected, "```sh block {} of the page", i + 1);
    }
    assert_eq!(shown.len(), expected.len(), "number of ```sh blocks");
}

#[test]
fn sh_blocks_are_read_whole_and_other_blocks_skipped() {
    let page = "text\n```sh\na\nb <<EOF\nEOF\n```\n```text\nout\n```\n```sh\nc\n```\n";
    assert_eq!(sh_blocks(page), ["a\nb <<EOF\nEOF", "c"]);
}

fn ran(code: i32, stdout: &str) -> Ran {
    Ran {
        code: Some(code),
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn step(title: &str) -> &'static Step {
    STEPS
        .iter()
        .find(|s| s.title == title)
        .expect("a step of the tour")
}

fn mesh() -> LocalMesh {
    serde_json::from_str(
        r#"{"pid":1,"manifests":"/m","logs":"/l","ztunnels":[],
        "pods":[{"namespace":"demo","name":"waypoint","node":"node-b","netns":"x","ip":"10.1.2.9"}]}"#,
    )
    .unwrap()
}

#[test]
fn the_checks_tell_a_good_outcome_from_a_bad_one() {
    let refused = step("The client's connection to db is refused");
    assert!((refused.check)(&ran(56, ""), &mesh()).is_ok());
    assert!((refused.check)(&ran(0, "hello from db, you are 10.0.0.1\n"), &mesh()).is_err());
    assert!(
        (refused.check)(&ran(6, ""), &mesh()).is_err(),
        "no name resolution is no denial"
    );

    let via = step("web now sees the waypoint as its client");
    assert!((via.check)(&ran(0, "hello from web-v1, you are 10.1.2.9\n"), &mesh()).is_ok());
    assert!((via.check)(&ran(0, "hello from web-v1, you are 10.1.1.2\n"), &mesh()).is_err());

    let split = step("200 requests, split 90/10");
    let good = "    181 hello from web-v1\n     19 hello from web-v2\n";
    assert_eq!(
        (split.check)(&ran(0, good), &mesh()).unwrap(),
        "web-v1 181, web-v2 19"
    );
    let all_v1 = "    200 hello from web-v1\n";
    assert!((split.check)(&ran(0, all_v1), &mesh()).is_err());
    let short = "    170 hello from web-v1\n     10 hello from web-v2\n";
    assert!((split.check)(&ran(0, short), &mesh()).is_err());

    let denied = step("POST is denied by the waypoint");
    assert!((denied.check)(&ran(0, "RBAC: access denied"), &mesh()).is_ok());
    assert!((denied.check)(&ran(0, "hello from web-v1, you are 10.1.2.9\n"), &mesh()).is_err());
}
