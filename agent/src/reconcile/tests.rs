use super::*;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn scope() -> Scope {
    let mut roles = BTreeMap::new();
    roles.insert(
        ip(100),
        (
            "writer".to_string(),
            vec!["db1".to_string(), "db2".to_string()],
        ),
    );
    for last in [101, 102] {
        roles.insert(
            ip(last),
            (
                "reader".to_string(),
                vec!["db1".into(), "db2".into(), "db3".into()],
            ),
        );
    }
    Scope {
        host: "db1".into(),
        managed: roles.keys().copied().collect(),
        roles,
        writer_role: "writer".into(),
        writer_hosts: vec!["db1".into(), "db2".into()],
    }
}

fn desired(writable: bool, vips: &[(u8, &str)]) -> Desired {
    Desired {
        epoch: 1,
        state: HostState::Online,
        active_master: "db1".into(),
        writable,
        vips: vips.iter().map(|(l, r)| (ip(*l), r.to_string())).collect(),
        parked: BTreeSet::new(),
    }
}

fn observed(read_only: Option<bool>, vips: &[u8]) -> Observed {
    Observed {
        vips: vips.iter().map(|l| ip(*l)).collect(),
        read_only,
        parked: BTreeSet::new(),
    }
}

#[test]
fn demotion_removes_the_writer_vip_before_read_only_and_kill() {
    let steps = plan(
        &desired(false, &[(101, "reader")]),
        &observed(Some(false), &[101, 100]),
        &scope(),
    );
    assert_eq!(
        steps,
        vec![
            Step::RemoveVip(ip(100)),
            Step::SetReadOnly(true),
            Step::KillSessions
        ]
    );
}

#[test]
fn promotion_goes_writable_before_taking_and_announcing_the_vip() {
    let steps = plan(
        &desired(true, &[(100, "writer"), (101, "reader")]),
        &observed(Some(true), &[101]),
        &scope(),
    );
    assert_eq!(
        steps,
        vec![
            Step::SetReadOnly(false),
            Step::AddVip(ip(100)),
            Step::Announce(ip(100))
        ]
    );
}

#[test]
fn a_matching_host_gets_no_steps() {
    let d = desired(true, &[(100, "writer"), (101, "reader")]);
    assert_eq!(
        plan(&d, &observed(Some(false), &[100, 101]), &scope()),
        vec![]
    );
}

#[test]
fn unmanaged_addresses_are_never_removed() {
    let steps = plan(
        &desired(false, &[]),
        &observed(Some(true), &[11, 250]),
        &scope(),
    );
    assert_eq!(steps, vec![]);
}

#[test]
fn unknown_mysql_state_is_forced_read_only() {
    let steps = plan(&desired(false, &[]), &observed(None, &[]), &scope());
    assert_eq!(steps, vec![Step::SetReadOnly(true), Step::KillSessions]);
}

#[test]
fn parking_is_last_and_taking_the_vip_ends_it() {
    let mut d = desired(false, &[(101, "reader")]);
    d.parked.insert(ip(100));
    // A reader losing its VIP and parking the writer's: removal first, parking last.
    assert_eq!(
        plan(&d, &observed(Some(true), &[101, 102]), &scope()),
        vec![Step::RemoveVip(ip(102)), Step::Park(ip(100))]
    );
    let mut parked = observed(Some(true), &[101]);
    parked.parked.insert(ip(100));
    assert_eq!(plan(&d, &parked, &scope()), vec![]);
    // Promoted: writable first, then the addition (which reclaims it from the RST
    // program); no separate unparking, which would answer for it with RST again.
    let promoted = desired(true, &[(100, "writer"), (101, "reader")]);
    assert_eq!(
        plan(&promoted, &parked, &scope()),
        vec![
            Step::SetReadOnly(false),
            Step::AddVip(ip(100)),
            Step::Announce(ip(100))
        ]
    );
    // The old writer came back: parked no more.
    assert_eq!(
        plan(&desired(false, &[(101, "reader")]), &parked, &scope()),
        vec![Step::Unpark(ip(100))]
    );
    // Parked while the address is ours anyway: only the kernel answers for it.
    let mut both = observed(Some(false), &[100, 101]);
    both.parked.insert(ip(100));
    assert_eq!(
        plan(&promoted, &both, &scope()),
        vec![Step::Reclaim(ip(100))]
    );
}

#[test]
fn parking_is_refused_for_what_is_not_a_writer_vip_of_this_host() {
    let d = DesiredState {
        epoch: 3,
        state: HostState::Online,
        active_master: String::new(),
        writable: false,
        roles: vec![("reader".into(), ip(101))],
        parked: vec![ip(101), ip(100), ip(100)],
    };
    assert_eq!(
        scope().check(&d).unwrap_err(),
        vec![
            "10.0.0.101 is parked but is not a VIP of role writer",
            "10.0.0.100 is parked twice",
        ]
    );
    let mut db3 = scope();
    db3.host = "db3".into();
    let d = DesiredState {
        parked: vec![ip(100)],
        ..d
    };
    assert_eq!(
        db3.check(&d).unwrap_err(),
        vec!["10.0.0.100 is parked, but db3 is not a host of role writer"]
    );
    let d = DesiredState {
        roles: vec![("writer".into(), ip(100))],
        writable: true,
        ..d
    };
    assert_eq!(
        scope().check(&d).unwrap_err(),
        vec![
            "10.0.0.100 is both held and parked",
            "parked VIPs with writable = true"
        ]
    );
    assert!(scope()
        .check(&DesiredState {
            roles: vec![],
            writable: false,
            ..d
        })
        .is_ok_and(|ok| ok.parked.contains(&ip(100))));
}

#[test]
fn bad_desired_states_are_refused_whole() {
    let d = DesiredState {
        epoch: 3,
        state: HostState::Online,
        active_master: "db1".into(),
        writable: false,
        roles: vec![
            ("reader".into(), ip(101)),
            ("writer".into(), ip(100)),
            ("reader".into(), ip(77)),
            ("writer".into(), ip(102)),
        ],
        parked: vec![],
    };
    let problems = scope().check(&d).unwrap_err();
    assert_eq!(
        problems,
        vec![
            "10.0.0.77 is not an IP of any configured role",
            "10.0.0.102 belongs to role reader, not writer",
            "role writer without writable = true",
        ]
    );
    let mut db3 = scope();
    db3.host = "db3".into();
    let d = DesiredState {
        roles: vec![("writer".into(), ip(100))],
        writable: true,
        ..d
    };
    assert_eq!(
        db3.check(&d).unwrap_err(),
        vec![
            "role writer may not be held by db3",
            "writable = true, but db3 is not a host of role writer"
        ]
    );
    // A writer role without a VIP: writable alone, still only on its hosts.
    let d = DesiredState {
        roles: vec![],
        writable: true,
        ..d
    };
    assert_eq!(
        db3.check(&d).unwrap_err(),
        vec!["writable = true, but db3 is not a host of role writer"]
    );
    assert!(scope()
        .check(&d)
        .is_ok_and(|ok| ok.writable && ok.vips.is_empty()));
}
