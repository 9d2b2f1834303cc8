-- `stakes_by_market` (migration 4) served settlement when it paid stakes one by one; since
-- migration 9 settlement pays positions, and no query reads stakes by market. Every stake
-- still wrote it: one index entry a stake, on its own leaf per market. Markets are never
-- deleted, so no foreign-key check needs it either.
DROP INDEX IF EXISTS stakes_by_market;
