-- The synchronous side: member registry (members-fn) and election administration (events-svc).

CREATE TABLE members.members (
    org_id      text        NOT NULL,
    id          uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    national_id text        NOT NULL,
    name        text        NOT NULL DEFAULT '',
    roles       text[]      NOT NULL DEFAULT ARRAY['member'],
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, national_id)
);

CREATE TABLE events.elections (
    org_id      text        NOT NULL,
    id          uuid        NOT NULL PRIMARY KEY,
    title       text        NOT NULL,
    question    text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('single', 'multiple', 'ranked')),
    options     jsonb       NOT NULL,
    max_choices integer     NOT NULL CHECK (max_choices >= 1),
    status      text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'open', 'closed')),
    opens_at    timestamptz,
    closes_at   timestamptz,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX elections_org_status_idx ON events.elections (org_id, status);

-- That a member received a token for an election -- never the token or its hash (invariant 4).
CREATE TABLE events.token_issuance (
    org_id      text NOT NULL,
    election_id uuid NOT NULL REFERENCES events.elections (id),
    member_id   uuid NOT NULL,
    PRIMARY KEY (election_id, member_id)
);

ALTER TABLE members.members       ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.elections      ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.token_issuance ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant ON members.members       USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());
CREATE POLICY tenant ON events.elections      USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());
CREATE POLICY tenant ON events.token_issuance USING (org_id = app_org_id()) WITH CHECK (org_id = app_org_id());

GRANT USAGE ON SCHEMA members TO ekklesia_members;
GRANT SELECT, INSERT, UPDATE, DELETE ON members.members TO ekklesia_members;

GRANT USAGE ON SCHEMA events TO ekklesia_events;
GRANT SELECT, INSERT, UPDATE ON events.elections, events.token_issuance TO ekklesia_events;
