-- The staff member list (issue 17): keyset pages of a program's members by id (UUIDv7, so
-- newest first) and the name search by prefix, case-insensitive (ASCII) through NOCASE.
CREATE INDEX members_program_id ON members(program_id, id);
CREATE INDEX members_name ON members(program_id, display_name COLLATE NOCASE);
