-- Mark all attempts of a pair with its final status (passed | discarded): the pair is finished.
UPDATE induction_records SET final_status = $final_status WHERE induction_key = $induction_key;
