-- Make the worker's batch transaction cheaper (issue 5; profile in docs/microbenchmarks.md).
--
-- 1. The foreign keys from ballots and receipts to their election ran one referential-integrity
--    trigger per inserted row: a `SELECT ... FOR KEY SHARE` of the *same* election row, twice per
--    vote, from every writer at once -- about a third of the server time of a 2,000-vote batch.
--    They only guarded against an election row disappearing under its ballots. No role may
--    DELETE an election, and both writers now read the election row `FOR KEY SHARE` in the
--    transaction that inserts its ballots (worker/src/batch.rs, the direct-mode function), so
--    the same guarantee costs one row lock per election per batch instead of two per ballot.
--    voting_tokens keeps its foreign key: tokens are registered in bulk outside the vote path.
ALTER TABLE elections.ballots  DROP CONSTRAINT ballots_election_id_fkey;
ALTER TABLE elections.receipts DROP CONSTRAINT receipts_election_id_fkey;

-- 2. Marking a token used rewrote it onto another page (tokens are registered in bulk, so their
--    pages were full), with a new primary-key entry: three WAL records per vote instead of one.
--    With 30 % of each page left free the update stays on its page (a HOT update). This applies
--    to pages written from now on, i.e. every later election's tokens.
ALTER TABLE elections.voting_tokens SET (fillfactor = 70);
