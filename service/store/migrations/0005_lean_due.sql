-- jobhook schema 5: one index fewer to keep on every change of due work.
-- Every query on `due` by time names the lane too (claim_due, next_due_at): due_provider_at serves
-- them all, and `due_at` alone cost each callback, poll and deadline one more B-tree write.
DROP INDEX due_at;
