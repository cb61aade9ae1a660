-- Forget a pair's unfinished attempts before it is run again (resume after an interruption).
DELETE FROM induction_records WHERE induction_key = $induction_key;
