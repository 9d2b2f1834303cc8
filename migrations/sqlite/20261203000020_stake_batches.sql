-- PostgreSQL's batch of stakes as one statement (its migration 20, `place_stakes`). SQLite
-- has no functions: its batches run the legs of a stake on the stake writer's connection,
-- one transaction a batch (`actors/src/store/money/sqlite_stakes.rs`). Nothing changes here;
-- the file keeps the two trees' migrations alike.
SELECT 1;
