-- The scope of a change, for readers that key by something other than the entity's id:
-- for prompts, the agent type the prompt serves (a prompt moved from one type to another
-- writes one change per type).
ALTER TABLE change_log ADD COLUMN scope TEXT;
