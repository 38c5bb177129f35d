-- The columns of Moodle's tables that progress capture reads, with Moodle's own names and
-- types (PostgreSQL). Used by `vessel-sync demo` and `vessel-sync bench outbox` to stand up a
-- throwaway Moodle-shaped database; the tests use the full schema dumped from Moodle 5.0.
CREATE TABLE mdl_user (id bigserial PRIMARY KEY, username varchar(100) NOT NULL, idnumber varchar(255) NOT NULL DEFAULT '', deleted smallint NOT NULL DEFAULT 0);
CREATE TABLE mdl_course (id bigserial PRIMARY KEY, shortname varchar(255) NOT NULL, idnumber varchar(100) NOT NULL DEFAULT '');
CREATE TABLE mdl_modules (id bigserial PRIMARY KEY, name varchar(20) NOT NULL);
CREATE TABLE mdl_page (id bigserial PRIMARY KEY, course bigint NOT NULL, name varchar(1333) NOT NULL);
CREATE TABLE mdl_course_modules (id bigserial PRIMARY KEY, course bigint NOT NULL, module bigint NOT NULL, instance bigint NOT NULL, idnumber varchar(100), completion smallint NOT NULL DEFAULT 1);
CREATE TABLE mdl_course_modules_completion (id bigserial PRIMARY KEY, coursemoduleid bigint NOT NULL, userid bigint NOT NULL, completionstate smallint NOT NULL, overrideby bigint, timemodified bigint NOT NULL, UNIQUE (userid, coursemoduleid));
CREATE TABLE mdl_course_completions (id bigserial PRIMARY KEY, userid bigint NOT NULL, course bigint NOT NULL, timeenrolled bigint NOT NULL DEFAULT 0, timestarted bigint NOT NULL DEFAULT 0, timecompleted bigint, reaggregate bigint NOT NULL DEFAULT 0, UNIQUE (userid, course));
CREATE TABLE mdl_grade_items (id bigserial PRIMARY KEY, courseid bigint, itemname varchar(255), itemtype varchar(30) NOT NULL, itemmodule varchar(30), iteminstance bigint, itemnumber bigint, idnumber varchar(255), grademax numeric(10,5) NOT NULL DEFAULT 100);
CREATE TABLE mdl_grade_grades (id bigserial PRIMARY KEY, itemid bigint NOT NULL, userid bigint NOT NULL, rawgrade numeric(10,5), finalgrade numeric(10,5), timecreated bigint, timemodified bigint, UNIQUE (userid, itemid));
INSERT INTO mdl_modules (id, name) VALUES (15, 'page');
