use super::*;

fn fields(kind: ElectionKind, max: u32) -> ElectionFields {
    ElectionFields {
        tenant: TenantId::parse("xd").unwrap(),
        id: Uuid::new_v4(),
        kind,
        options: ["a", "b", "c"]
            .iter()
            .map(|id| ElectionOption {
                id: (*id).into(),
                label: id.to_uppercase(),
            })
            .collect(),
        max_choices: max,
        status: ElectionStatus::Open,
        opens_at: None,
        closes_at: None,
    }
}

fn definition(kind: ElectionKind, max: u32) -> ElectionDefinition {
    ElectionDefinition::new(fields(kind, max)).unwrap()
}

#[test]
fn ballots_are_parsed_against_the_definition() {
    let single = definition(ElectionKind::Single, 1);
    assert!(single.ballot(vec!["a".into()]).is_ok());
    assert!(single.ballot(vec![]).is_err());
    assert!(single.ballot(vec!["a".into(), "b".into()]).is_err());
    assert!(single.ballot(vec!["zz".into()]).is_err());
    let ranked = definition(ElectionKind::Ranked, 3);
    assert_eq!(
        ranked
            .ballot(vec!["c".into(), "a".into()])
            .unwrap()
            .choices(),
        ["c", "a"]
    );
    assert!(ranked.ballot(vec!["a".into(), "a".into()]).is_err());
}

#[test]
fn definitions_are_checked_when_built() {
    let new = ElectionDefinition::new;
    assert!(new(fields(ElectionKind::Single, 2)).is_err());
    assert!(new(fields(ElectionKind::Multiple, 4)).is_err());
    let mut dup = fields(ElectionKind::Multiple, 2);
    dup.options[1].id = "a".into();
    assert!(new(dup).is_err());
    for bad in ["a\u{0}b", "tab\there", "line\n"] {
        let mut control = fields(ElectionKind::Multiple, 2);
        control.options[0].id = bad.into();
        assert!(new(control).is_err(), "{bad:?} accepted");
    }
    let mut free_text = fields(ElectionKind::Multiple, 2);
    free_text.options[0].id = r#"say "no", {x} \ ✓"#.into();
    assert!(new(free_text).is_ok());
    assert!(new(fields(ElectionKind::Multiple, 3)).is_ok());
}

#[test]
fn a_definition_cannot_be_deserialized_unchecked() {
    let good = serde_json::to_value(definition(ElectionKind::Multiple, 2)).unwrap();
    assert!(serde_json::from_value::<ElectionDefinition>(good.clone()).is_ok());
    let mut too_many = good.clone();
    too_many["max_choices"] = 9.into();
    let mut duplicate = good;
    duplicate["options"][1]["id"] = "a".into();
    for bad in [too_many, duplicate] {
        let refused = serde_json::from_value::<ElectionDefinition>(bad.clone());
        assert!(refused.is_err(), "accepted {bad}");
    }
}

#[test]
fn vote_statuses_keep_their_json_strings() {
    for (status, text) in [
        (VoteStatus::Queued, "queued"),
        (VoteStatus::Recorded, "recorded"),
        (VoteStatus::Rejected, "rejected"),
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), text);
        assert_eq!(VoteStatus::parse(text), Ok(status));
    }
    assert!(VoteStatus::parse("lost").is_err());
}

#[test]
fn tenants_are_restricted() {
    assert!(TenantId::parse("xd-reykjavik").is_ok());
    assert!(TenantId::parse("X").is_err());
    assert!(TenantId::parse("a'; drop").is_err());
}
