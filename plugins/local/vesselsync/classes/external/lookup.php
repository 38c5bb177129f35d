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
use local_vesselsync\resolver;

/**
 * local_vesselsync_lookup: many courses and learners resolved by key in one call, hidden
 * courses included, and which of the learners are enrolled in which of the courses. What the
 * core web services cannot answer at once (core_enrol_get_users_courses leaves hidden courses
 * out, one learner a call).
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class lookup extends external_api {
    /** Keys of each kind one call may carry. */
    const MAX_KEYS = 1000;

    /**
     * Parameters.
     *
     * @return external_function_parameters
     */
    public static function execute_parameters(): external_function_parameters {
        return new external_function_parameters([
            'courses' => new external_multiple_structure(
                new external_value(PARAM_RAW, 'Course idnumber, else shortname'), 'Courses', VALUE_DEFAULT, []),
            'users' => new external_multiple_structure(
                new external_value(PARAM_RAW, 'Learner idnumber, else username'), 'Learners', VALUE_DEFAULT, []),
        ]);
    }

    /**
     * Resolves the keys.
     *
     * @param array $courses
     * @param array $users
     * @return array
     */
    public static function execute(array $courses = [], array $users = []): array {
        $params = self::validate_parameters(self::execute_parameters(), ['courses' => $courses, 'users' => $users]);
        $context = \context_system::instance();
        self::validate_context($context);
        require_capability('local/vesselsync:lookup', $context);
        if (count($params['courses']) > self::MAX_KEYS || count($params['users']) > self::MAX_KEYS) {
            throw new \invalid_parameter_exception('at most ' . self::MAX_KEYS . ' courses and learners per call');
        }
        $resolver = new resolver();
        $outcourses = [];
        foreach (array_unique($params['courses']) as $key) {
            $c = $resolver->course($key);
            if (!$c) {
                continue;
            }
            $acts = [];
            foreach ($c->activities as $akey => $cm) {
                $acts[] = ['key' => (string) $akey, 'cmid' => (int) $cm->id, 'modname' => $cm->modname];
            }
            $outcourses[] = ['key' => $key, 'id' => (int) $c->id, 'visible' => (int) $c->visible,
                'localkey' => (string) $c->idnumber !== '' ? (string) $c->idnumber : (string) $c->shortname,
                'activities' => $acts];
        }
        $outusers = [];
        $enrolments = [];
        foreach (array_unique($params['users']) as $key) {
            $u = $resolver->user($key);
            if (!$u) {
                continue;
            }
            $outusers[] = ['key' => $key, 'id' => (int) $u->id, 'username' => $u->username,
                'idnumber' => (string) $u->idnumber];
            foreach ($outcourses as $c) {
                if ($resolver->enrolled((int) $u->id, $c['id'])) {
                    $enrolments[] = ['userid' => (int) $u->id, 'courseid' => $c['id']];
                }
            }
        }
        return ['courses' => $outcourses, 'users' => $outusers, 'enrolments' => $enrolments];
    }

    /**
     * What was found (keys not found are left out).
     *
     * @return external_single_structure
     */
    public static function execute_returns(): external_single_structure {
        return new external_single_structure([
            'courses' => new external_multiple_structure(new external_single_structure([
                'key' => new external_value(PARAM_RAW, 'The key asked'),
                'id' => new external_value(PARAM_INT, 'Course id'),
                'visible' => new external_value(PARAM_INT, '1 if visible'),
                'localkey' => new external_value(PARAM_RAW, 'Its idnumber, else shortname'),
                'activities' => new external_multiple_structure(new external_single_structure([
                    'key' => new external_value(PARAM_RAW, 'Course-module idnumber, or MODNAME:NAME'),
                    'cmid' => new external_value(PARAM_INT, 'Course-module id'),
                    'modname' => new external_value(PARAM_PLUGIN, 'Module'),
                ])),
            ])),
            'users' => new external_multiple_structure(new external_single_structure([
                'key' => new external_value(PARAM_RAW, 'The key asked'),
                'id' => new external_value(PARAM_INT, 'User id'),
                'username' => new external_value(PARAM_RAW, 'Username'),
                'idnumber' => new external_value(PARAM_RAW, 'Idnumber'),
            ])),
            'enrolments' => new external_multiple_structure(new external_single_structure([
                'userid' => new external_value(PARAM_INT, 'User id'),
                'courseid' => new external_value(PARAM_INT, 'Course id'),
            ])),
        ]);
    }
}
