//! `cargo xtask e2e --suite faults`: the fault and attack matrix of
//! reliability.md §5, one row at a time, each by the tests that prove it.
//! docs/reliability.md lists the same rows; the suite refuses to run if a
//! test named here is missing from that page, and fails if a named test
//! did not run and pass.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

// Targets that run with one redirection mode whatever is asked, as in
// `cargo xtask e2e`: eBPF-only tests, and known eBPF failures that
// docs/reliability.md records.
use crate::{E2E_EBPF_TESTS as EBPF_ONLY, E2E_NFTABLES_TESTS as NFTABLES_ONLY};

/// Where a test lives: a package, and its library or one of its test
/// targets.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Lib(&'static str),
    Test(&'static str, &'static str),
}

/// One row and its tests (test function names; library tests by the
/// name of the function, which libtest matches within its module path).
struct Row {
    id: &'static str,
    tests: &'static [(Target, &'static str)],
}

use Target::{Lib, Test};

const IT: &str = "integration";

const ROWS: &[Row] = &[
    Row {
        id: "M1",
        tests: &[(
            Test(IT, "capture"),
            "between_nodes_the_payload_is_never_in_clear_and_every_tunnel_is_tls",
        )],
    },
    Row {
        id: "M2",
        tests: &[(
            Test(IT, "hbone"),
            "server_with_the_wrong_identity_is_refused_before_any_byte_reaches_the_app",
        )],
    },
    Row {
        id: "M3",
        tests: &[(
            Test(IT, "hbone"),
            "inbound_refuses_clients_outside_the_tls_policy",
        )],
    },
    Row {
        id: "M4",
        tests: &[(
            Test(IT, "hbone"),
            "inbound_refuses_clients_outside_the_tls_policy",
        )],
    },
    Row {
        id: "M5",
        tests: &[(
            Lib("mesh-tls"),
            "only_a_single_well_formed_spiffe_uri_san_is_an_identity",
        )],
    },
    Row {
        id: "M6",
        tests: &[
            (
                Test(IT, "hbone"),
                "inbound_refuses_clients_outside_the_tls_policy",
            ),
            (
                Lib("mesh-tls"),
                "only_a_single_well_formed_spiffe_uri_san_is_an_identity",
            ),
        ],
    },
    Row {
        id: "M7",
        tests: &[
            (
                Test(IT, "policy"),
                "a_crl_revoking_the_client_certificate_closes_its_tunnel_and_refuses_new_ones",
            ),
            (
                Test(IT, "policy"),
                "a_crl_revoking_the_server_certificate_closes_the_pooled_connection",
            ),
            (
                Lib("mesh-tls"),
                "the_watched_file_is_reloaded_and_a_bad_one_keeps_the_crls_in_force",
            ),
        ],
    },
    Row {
        id: "A1",
        tests: &[(
            Test(IT, "policy"),
            "a_policy_change_closes_open_connections_it_no_longer_allows",
        )],
    },
    Row {
        id: "A2",
        tests: &[
            (Lib("istiod-lite"), "evaluation_order_and_empty_forms"),
            (Lib("mesh-core"), "deny_beats_allow_in_any_order"),
            (Lib("mesh-core"), "dry_run_never_decides"),
        ],
    },
    Row {
        id: "A3",
        tests: &[
            (
                Test(IT, "policy"),
                "a_malformed_resource_from_istiod_is_nacked_while_the_others_apply",
            ),
            (
                Test(IT, "xds"),
                "policies_are_made_before_and_broken_after_the_workloads_that_name_them",
            ),
            (
                Lib("mesh-xds"),
                "unreadable_or_missing_policies_fail_closed",
            ),
        ],
    },
    Row {
        id: "A4",
        tests: &[(Lib("istiod-lite"), "http_attributes_at_ztunnel")],
    },
    Row {
        id: "A5",
        tests: &[(
            Test(IT, "policy"),
            "strict_mtls_refuses_plaintext_that_permissive_accepts",
        )],
    },
    Row {
        id: "A6",
        tests: &[(
            Test(IT, "hbone"),
            "hbone_abuse_is_refused_stream_by_stream_and_siblings_still_work",
        )],
    },
    Row {
        id: "A8",
        tests: &[
            (
                Test(IT, "waypoint"),
                "a8_every_spelling_of_a_request_gets_the_canonical_decision_and_the_waypoint_cannot_be_skipped",
            ),
            (Lib("waypoint"), "path_normalization"),
            (
                Lib("waypoint"),
                "hosts_match_case_insensitively_with_or_without_port",
            ),
        ],
    },
    Row {
        id: "C1",
        tests: &[(
            Test(IT, "policy"),
            "without_the_control_plane_known_destinations_keep_working_and_reconnection_sends_only_changes",
        )],
    },
    Row {
        id: "C2",
        tests: &[(
            Test(IT, "control_plane"),
            "ztunnel_started_without_its_control_plane_fails_closed_and_recovers_once_it_is_reachable",
        )],
    },
    Row {
        id: "C3",
        tests: &[(
            Test(IT, "xds"),
            "a_malformed_resource_is_nacked_by_name_while_the_others_apply",
        )],
    },
    Row {
        id: "C4",
        tests: &[
            (
                Test(IT, "ca"),
                "callers_without_a_token_are_refused_whatever_they_claim",
            ),
            (Test(IT, "ca"), "only_trusted_node_proxies_may_impersonate"),
        ],
    },
    Row {
        id: "K1",
        tests: &[
            (
                Lib("mesh-tls"),
                "keeps_serving_valid_certificate_while_renewal_fails",
            ),
            (
                Test(IT, "hbone"),
                "certificates_rotate_under_continuous_traffic_without_failures",
            ),
        ],
    },
    Row {
        id: "K2",
        tests: &[
            (
                Lib("mesh-tls"),
                "past_expiry_without_the_ca_nothing_is_served_until_it_returns",
            ),
            (
                Test(IT, "policy"),
                "with_the_ca_away_past_certificate_expiry_new_connections_fail_closed_and_recover",
            ),
            (
                Test(IT, "hbone"),
                "a_client_certificate_that_ends_takes_no_new_stream_and_open_tunnels_carry_on",
            ),
        ],
    },
    Row {
        id: "K3",
        tests: &[
            (
                Lib("mesh-tls"),
                "issued_chains_must_verify_to_the_configured_roots_which_alone_are_trusted",
            ),
            (
                Lib("mesh-tls"),
                "expired_or_future_certificates_are_refused_and_retried_with_back_off",
            ),
            (
                Lib("mesh-tls"),
                "a_certificate_due_on_arrival_is_renewed_with_back_off",
            ),
            (
                Lib("mesh-tls"),
                "a_longer_lifetime_than_asked_for_is_renewed_by_the_requested_one",
            ),
            (
                Lib("mesh-tls"),
                "waiting_on_a_renewal_that_hangs_is_bounded",
            ),
            (
                Test(IT, "ca_answers"),
                "a_chain_to_another_root_is_refused_and_the_current_certificate_stays",
            ),
            (Test(IT, "ca_answers"), "an_appended_root_is_not_trusted"),
            (
                Test(IT, "ca_answers"),
                "an_expired_certificate_is_refused_and_the_current_one_stays",
            ),
            (
                Test(IT, "ca_answers"),
                "a_certificate_from_the_future_is_refused_and_the_current_one_stays",
            ),
            (
                Test(IT, "ca_answers"),
                "a_certificate_due_on_arrival_leaves_the_longer_lived_one_in_use",
            ),
            (
                Test(IT, "ca_answers"),
                "a_lifetime_far_longer_than_asked_is_renewed_by_the_asked_one",
            ),
        ],
    },
    Row {
        id: "K4",
        tests: &[
            (
                Test(IT, "ca"),
                "impersonation_needs_a_pod_with_that_identity_on_the_callers_node",
            ),
            (Test(IT, "ca"), "only_trusted_node_proxies_may_impersonate"),
            (Test(IT, "ca"), "forged_tokens_are_refused"),
        ],
    },
    Row {
        id: "K5",
        tests: &[
            (
                Lib("mesh-tls"),
                "a_suspend_past_the_refresh_point_renews_at_once",
            ),
            (
                Lib("mesh-tls"),
                "a_clock_that_jumps_without_running_time_wakes_the_waits",
            ),
        ],
    },
    Row {
        id: "K6",
        tests: &[
            (
                Test(IT, "admin"),
                "config_dump_lists_workloads_and_certificates_without_key_material",
            ),
            (
                Test(IT, "telemetry"),
                "ztunnel_metrics_and_access_logs_describe_the_traffic_in_istios_terms",
            ),
            (
                Test(IT, "ca"),
                "plugged_in_key_readable_by_others_stops_startup",
            ),
        ],
    },
    Row {
        id: "R1",
        tests: &[(
            Test(IT, "capture"),
            "cni_add_fails_closed_without_the_agent_and_pods_outside_the_mesh_are_untouched",
        )],
    },
    Row {
        id: "R2",
        tests: &[(
            Test(IT, "capture"),
            "with_ztunnel_stopped_enrolled_pods_fail_closed_and_the_snapshot_restores_them",
        )],
    },
    Row {
        id: "R3",
        tests: &[
            (
                Test(IT, "capture"),
                "rules_that_fail_half_way_leave_the_pod_with_all_of_them_or_none",
            ),
            (
                Test(IT, "ebpf"),
                "a_program_the_kernel_refuses_fails_enrollment_clearly_and_nothing_leaves_in_plaintext",
            ),
        ],
    },
    Row {
        id: "R4",
        tests: &[(
            Test(IT, "capture"),
            "flushed_rules_are_put_back_within_five_seconds",
        )],
    },
    Row {
        id: "R5",
        tests: &[(
            Test(IT, "bypass"),
            "an_application_without_net_admin_cannot_mark_or_spoof_its_way_past_the_capture",
        )],
    },
    Row {
        id: "R6",
        tests: &[
            (
                Test(IT, "ebpf"),
                "a_program_the_kernel_refuses_fails_enrollment_clearly_and_nothing_leaves_in_plaintext",
            ),
            (
                Test("mesh-ebpf", "kernel"),
                "a_refused_program_is_named_with_the_verifiers_reason",
            ),
            (
                Test(IT, "ebpf"),
                "without_the_kernels_btf_the_programs_load_and_capture_as_before",
            ),
            (
                Test("mesh-ebpf", "kernel"),
                "the_programs_keep_no_map_that_can_fill",
            ),
        ],
    },
    Row {
        id: "R7",
        tests: &[
            (
                Test(IT, "limits"),
                "a_pod_deleted_with_a_stream_open_ends_it_within_a_second_and_others_carry_on",
            ),
            (
                Test(IT, "churn"),
                "pod_churn_leaves_no_descriptors_threads_memory_or_namespaces_behind",
            ),
            (
                Test(IT, "ebpf"),
                "releasing_every_pod_leaves_no_program_filter_or_map_behind",
            ),
        ],
    },
    Row {
        id: "R8",
        tests: &[(
            Test(IT, "capture"),
            "pods_enrolled_and_deleted_while_ztunnel_is_stopped_are_right_after_its_snapshot",
        )],
    },
    Row {
        id: "H1",
        tests: &[
            (
                Test(IT, "h2spec"),
                "h2spec_against_the_hbone_server_fails_only_allowed_cases",
            ),
            (
                Test(IT, "h2spec"),
                "h2spec_against_the_waypoint_fails_only_allowed_cases",
            ),
            (
                Test(IT, "tls_scan"),
                "the_mesh_tls_endpoints_speak_tls_1_3_with_aes_gcm_only",
            ),
        ],
    },
    Row {
        id: "H2",
        tests: &[
            (
                Test("mesh-hbone", "abuse"),
                "rapid_reset_is_cut_off_with_enhance_your_calm_after_bounded_work",
            ),
            (
                Test("mesh-hbone", "abuse"),
                "streams_reset_after_reaching_the_handler_are_cut_off_too",
            ),
        ],
    },
    Row {
        id: "H3",
        tests: &[(
            Test("mesh-hbone", "abuse"),
            "header_bombs_reach_no_handler_and_memory_stays_bounded",
        )],
    },
    Row {
        id: "H4",
        tests: &[(
            Test("mesh-hbone", "abuse"),
            "flow_control_abuse_is_bounded_and_stuck_peers_are_dropped",
        )],
    },
    Row {
        id: "H5",
        tests: &[
            (
                Test("mesh-hbone", "abuse"),
                "streams_over_the_concurrency_limit_are_refused_one_by_one",
            ),
            (
                Test("mesh-hbone", "pool"),
                "a_pool_past_its_stream_limit_opens_a_second_connection",
            ),
        ],
    },
    Row {
        id: "H6",
        tests: &[
            (
                Test("mesh-hbone", "abuse"),
                "clients_that_never_send_the_preface_are_closed_within_the_handshake_bound",
            ),
            (
                Test(IT, "stalled_clients"),
                "ztunnel_hbone_closes_clients_that_never_send_the_preface",
            ),
            (
                Test(IT, "stalled_clients"),
                "istiod_closes_clients_that_never_send_the_preface",
            ),
            (
                Test(IT, "stalled_clients"),
                "http_endpoints_close_clients_that_never_send_a_request",
            ),
            (
                Test(IT, "stalled_clients"),
                "idle_tcp_clients_of_15001_and_15006_are_held_and_others_are_served",
            ),
        ],
    },
    Row {
        id: "H7",
        tests: &[
            (
                Test(IT, "hbone"),
                "transfers_256_mib_intact_both_ways_and_half_closes_from_the_client",
            ),
            (Test(IT, "hbone"), "half_close_from_the_server_side"),
        ],
    },
    Row {
        id: "H8",
        tests: &[
            (
                Test(IT, "smuggling"),
                "ambiguous_requests_get_400_and_a_close_and_nothing_behind_them_is_read",
            ),
            (
                Test(IT, "smuggling"),
                "a_malformed_chunked_body_ends_the_connection_and_nothing_behind_it_is_read",
            ),
        ],
    },
    Row {
        id: "E2",
        tests: &[(
            Test(IT, "memory"),
            "thousands_of_idle_streams_and_bulk_transfers_fit_in_128_mib",
        )],
    },
    Row {
        id: "E3",
        tests: &[(
            Test(IT, "churn"),
            "connection_churn_leaves_ztunnel_where_it_was_and_closes_what_it_opens",
        )],
    },
    Row {
        id: "E4",
        tests: &[(
            Test(IT, "ca_load"),
            "two_hundred_pods_at_once_get_their_certificates_with_bounded_concurrency_and_spread_retries",
        )],
    },
    Row {
        id: "D1",
        tests: &[
            (
                Test(IT, "capture"),
                "sigterm_drains_ztunnel_in_flight_requests_finish_and_long_connections_end_at_the_deadline",
            ),
            (
                Test(IT, "telemetry"),
                "quitquitquit_drains_ztunnel_as_sigterm_does",
            ),
        ],
    },
    Row {
        id: "D2",
        tests: &[(
            Test(IT, "upgrade"),
            "a_new_ztunnel_takes_over_beside_the_old_and_no_new_connection_fails",
        )],
    },
    // Not a row of §5: §1.9, descriptors exhausted.
    Row {
        id: "D3",
        tests: &[(
            Test(IT, "capture"),
            "a_second_signal_during_the_drain_exits_at_once_and_the_next_start_recovers",
        )],
    },
    Row {
        id: "FD",
        tests: &[(
            Test(IT, "limits"),
            "out_of_file_descriptors_ztunnel_waits_without_spinning_and_recovers",
        )],
    },
    Row {
        id: "D4",
        tests: &[(
            Test(IT, "soak"),
            "traffic_holds_through_rotation_policy_churn_and_control_plane_restarts",
        )],
    },
    Row {
        id: "DS",
        tests: &[
            (
                Test(IT, "dual_stack"),
                "ipv4_workloads_are_served_on_the_default_dual_stack_listeners",
            ),
            (
                Lib("mesh-runtime"),
                "a_dual_stack_listener_hands_over_ipv4_peers_as_ipv4",
            ),
        ],
    },
];

/// The rows' tests, grouped by where they live.
fn by_target() -> BTreeMap<Target, Vec<&'static str>> {
    let mut by_target: BTreeMap<Target, Vec<&str>> = BTreeMap::new();
    for row in ROWS {
        for (target, test) in row.tests {
            by_target.entry(*target).or_default().push(test);
        }
    }
    by_target
}

/// Runs every row's tests with `redirect` (eBPF-only targets always with
/// eBPF), then checks that each named test ran and passed.
pub fn run(redirect: &str) -> anyhow::Result<()> {
    check_docs()?;
    let by_target = by_target();
    let mut passed = Vec::new();
    for (target, tests) in &by_target {
        let mut args = vec!["test", "-p"];
        let mode = match *target {
            Lib(package) => {
                args.extend([package, "--lib"]);
                redirect
            }
            Test(package, name) => {
                args.extend([package, "--test", name]);
                if EBPF_ONLY.contains(&name) {
                    "ebpf"
                } else if NFTABLES_ONLY.contains(&name) {
                    if redirect != "nftables" {
                        eprintln!(
                            "xtask faults: `{name}` runs with nftables, not {redirect} \
                             (a known eBPF failure, docs/reliability.md)"
                        );
                    }
                    "nftables"
                } else {
                    redirect
                }
            }
        };
        // Rows may name tests kept out of `cargo test` for what they need
        // (h2spec from `cargo xtask cluster build`): run those too.
        args.extend(["--", "--include-ignored"]);
        args.extend(tests.iter().copied());
        passed.extend(cargo_test(&args, mode)?);
    }
    let mut missing = Vec::new();
    for row in ROWS {
        for (_, test) in row.tests {
            if !passed
                .iter()
                .any(|p| p == test || p.ends_with(&format!("::{test}")))
            {
                missing.push(format!("{} {test}", row.id));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "tests named in the faults suite did not run (renamed or removed?):\n  {}",
            missing.join("\n  ")
        );
    }
    eprintln!(
        "xtask e2e --suite faults ({redirect}): {} rows, {} tests passed",
        ROWS.len(),
        passed.len()
    );
    Ok(())
}

/// For CI, after every test has run in both redirection modes (the
/// workspace's tests, then the cluster suite with eBPF): the rows' tests
/// are not run a third time, but each must exist where its row says and
/// be on docs/reliability.md. `cargo xtask e2e --suite faults` runs them.
pub fn check_listed() -> anyhow::Result<()> {
    check_docs()?;
    let by_target = by_target();
    let mut missing = Vec::new();
    for (target, tests) in &by_target {
        let mut args = vec!["test", "-q", "-p"];
        match *target {
            Lib(package) => args.extend([package, "--lib"]),
            Test(package, name) => args.extend([package, "--test", name]),
        }
        args.extend(["--", "--list", "--include-ignored"]);
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .output()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "cargo {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test").map(str::to_string))
            .collect();
        for test in tests {
            if !listed
                .iter()
                .any(|l| l == test || l.ends_with(&format!("::{test}")))
            {
                missing.push(format!("{test} ({})", args[3..].join(" ")));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "tests named in the faults suite do not exist (renamed or removed?):\n  {}",
            missing.join("\n  ")
        );
    }
    eprintln!(
        "xtask faults: {} rows; every test they name exists and is on docs/reliability.md",
        ROWS.len()
    );
    Ok(())
}

/// Every test named here is named on docs/reliability.md, so the page
/// cannot drift from what runs.
fn check_docs() -> anyhow::Result<()> {
    let page = std::fs::read_to_string("docs/reliability.md")
        .context("reading docs/reliability.md (run from the workspace root)")?;
    let absent: Vec<String> = ROWS
        .iter()
        .flat_map(|r| r.tests.iter().map(move |(_, t)| (r.id, *t)))
        .filter(|(_, t)| !page.contains(t))
        .map(|(id, t)| format!("{id} {t}"))
        .collect();
    if !absent.is_empty() {
        bail!(
            "docs/reliability.md does not list these tests of the faults suite:\n  {}",
            absent.join("\n  ")
        );
    }
    Ok(())
}

/// `cargo <args>`, its output passed through; the names of the tests that
/// passed.
fn cargo_test(args: &[&str], redirect: &str) -> anyhow::Result<Vec<String>> {
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .env("MESH_E2E_REDIRECT", redirect)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut passed = Vec::new();
    let out = child.stdout.take().expect("piped");
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... ok"))
        {
            passed.push(name.to_string());
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(passed)
}
