use super::*;

#[test]
fn months_are_calendar_months_in_utc() {
    let m: Month = "2026-12".parse().unwrap();
    assert_eq!(m.start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
    assert_eq!(m.end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    assert_eq!(m.to_string(), "2026-12");
    for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
        assert!(bad.parse::<Month>().is_err(), "{bad}");
    }
}

#[test]
fn counts_add_up_per_tenant_and_minute_and_survive_a_failed_flush() {
    let usage = Usage::default();
    usage.request("party-a");
    usage.request("party-a");
    usage.login("party-a");
    usage.vote("party-b");
    let taken = std::mem::take(&mut *usage.counts.lock().unwrap());
    let sum = |tenant: &str, what: usize| -> i64 {
        taken
            .minutes
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, c)| c[what])
            .sum()
    };
    assert_eq!(
        (
            sum("party-a", REQUESTS),
            sum("party-a", LOGINS),
            sum("party-b", VOTES)
        ),
        (2, 1, 1)
    );
    assert_eq!(taken.seconds.values().sum::<i64>(), 1);
    // What a failed flush puts back is added to what was counted meanwhile.
    usage.request("party-a");
    usage.counts.lock().unwrap().merge(taken);
    let counts = usage.counts.lock().unwrap();
    let requests: i64 = counts.minutes.values().map(|c| c[REQUESTS]).sum();
    assert_eq!(requests, 3);
}
