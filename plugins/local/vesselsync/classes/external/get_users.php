<?php
// This file is part of vessel-sync's companion plugin for Moodle - http://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <http://www.gnu.org/licenses/>.

namespace local_vesselsync\external;

use core_external\external_api;
use core_external\external_function_parameters;
use core_external\external_multiple_structure;
use core_external\external_single_structure;
use core_external\external_value;

/**
 * local_vesselsync_get_users: many accounts by username, email (any letter case) or idnumber
 * in one call, with the few fields a crew list carries and the courses (of those asked) each is
 * enrolled in. What core_user_get_users_by_field answers at a fraction of its cost (it builds a
 * full profile per account), so that a crew list sent whole again costs only this check.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class get_users extends external_api {
    /** Values one call may carry. */
    const MAX_VALUES = 1000;

    /**
     * Parameters.
     *
     * @return external_function_parameters
     */
    public static function execute_parameters(): external_function_parameters {
        return new external_function_parameters([
            'field' => new external_value(PARAM_ALPHA, 'username, email or idnumber'),
            'values' => new external_multiple_structure(new external_value(PARAM_RAW, 'A value')),
            'courses' => new external_multiple_structure(
                new external_value(PARAM_RAW, 'A course shortname'), 'Courses to report enrolments in',
                VALUE_DEFAULT, []),
        ]);
    }

    /**
     * The accounts.
     *
     * @param string $field
     * @param array $values
     * @param array $courses
     * @return array
     */
    public static function execute(string $field, array $values, array $courses = []): array {
        global $DB, $CFG;
        $params = self::validate_parameters(self::execute_parameters(),
            ['field' => $field, 'values' => $values, 'courses' => $courses]);
        $context = \context_system::instance();
        self::validate_context($context);
        require_capability('local/vesselsync:lookup', $context);
        if (!in_array($params['field'], ['username', 'email', 'idnumber'], true)) {
            throw new \invalid_parameter_exception('field must be username, email or idnumber');
        }
        if (count($params['values']) > self::MAX_VALUES || count($params['courses']) > self::MAX_VALUES) {
            throw new \invalid_parameter_exception('at most ' . self::MAX_VALUES . ' values and courses per call');
        }
        $vals = array_values(array_unique(array_filter($params['values'], fn($v) => $v !== '')));
        if (!$vals) {
            return [];
        }
        $column = $params['field'];
        if ($column === 'email') {
            $vals = array_values(array_unique(array_map('core_text::strtolower', $vals)));
            $column = 'LOWER(email)';
        }
        [$insql, $inparams] = $DB->get_in_or_equal($vals, SQL_PARAMS_NAMED, 'v');
        $inparams['mnethost'] = $CFG->mnet_localhost_id;
        $users = $DB->get_records_select('user', "deleted = 0 AND mnethostid = :mnethost AND $column $insql",
            $inparams, 'id', 'id, username, idnumber, email, firstname, lastname, auth, suspended');
        $enrolled = [];
        $wanted = array_values(array_unique($params['courses']));
        if ($users && $wanted) {
            [$usql, $uparams] = $DB->get_in_or_equal(array_keys($users), SQL_PARAMS_NAMED, 'u');
            [$csql, $cparams] = $DB->get_in_or_equal($wanted, SQL_PARAMS_NAMED, 'c');
            $rs = $DB->get_recordset_sql(
                "SELECT ue.id, ue.userid, c.shortname
                   FROM {user_enrolments} ue
                   JOIN {enrol} e ON e.id = ue.enrolid
                   JOIN {course} c ON c.id = e.courseid
                  WHERE ue.userid $usql AND c.shortname $csql",
                $uparams + $cparams);
            foreach ($rs as $row) {
                $enrolled[$row->userid][$row->shortname] = true;
            }
            $rs->close();
        }
        $out = [];
        foreach ($users as $u) {
            $out[] = [
                'id' => (int) $u->id,
                'username' => $u->username,
                'idnumber' => (string) $u->idnumber,
                'email' => (string) $u->email,
                'firstname' => (string) $u->firstname,
                'lastname' => (string) $u->lastname,
                'auth' => (string) $u->auth,
                'suspended' => (int) $u->suspended,
                'courses' => array_keys($enrolled[$u->id] ?? []),
            ];
        }
        return $out;
    }

    /**
     * The accounts found (values with none are left out).
     *
     * @return external_multiple_structure
     */
    public static function execute_returns(): external_multiple_structure {
        return new external_multiple_structure(new external_single_structure([
            'id' => new external_value(PARAM_INT, 'User id'),
            'username' => new external_value(PARAM_RAW, 'Username'),
            'idnumber' => new external_value(PARAM_RAW, 'Idnumber'),
            'email' => new external_value(PARAM_RAW, 'Email'),
            'firstname' => new external_value(PARAM_RAW, 'First name'),
            'lastname' => new external_value(PARAM_RAW, 'Last name'),
            'auth' => new external_value(PARAM_RAW, 'Authentication method'),
            'suspended' => new external_value(PARAM_INT, '1 if suspended'),
            'courses' => new external_multiple_structure(
                new external_value(PARAM_RAW, 'Shortname of a course asked that the user is enrolled in')),
        ]));
    }
}
