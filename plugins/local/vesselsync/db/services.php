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

/**
 * Web-service functions of local_vesselsync, and the service vessel-sync's shore uses.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$functions = [
    'local_vesselsync_apply_progress' => [
        'classname' => 'local_vesselsync\external\apply_progress',
        'description' => 'Applies activity completions and grades in bulk with their original time; '
            . 'newer wins, decided per record in one transaction; an outcome per record.',
        'type' => 'write',
        'capabilities' => 'local/vesselsync:applyprogress',
    ],
    'local_vesselsync_get_users' => [
        'classname' => 'local_vesselsync\external\get_users',
        'description' => 'Accounts by username, email or idnumber in bulk, with the fields a crew list '
            . 'carries and their enrolments in the courses asked.',
        'type' => 'read',
        'capabilities' => 'local/vesselsync:lookup',
    ],
    'local_vesselsync_lookup' => [
        'classname' => 'local_vesselsync\external\lookup',
        'description' => 'Resolves courses (hidden ones too) and learners by key, and which learners '
            . 'are enrolled in which of the courses.',
        'type' => 'read',
        'capabilities' => 'local/vesselsync:lookup',
    ],
];

$services = [
    'vessel-sync' => [
        'functions' => ['local_vesselsync_apply_progress', 'local_vesselsync_lookup',
            'local_vesselsync_get_users'],
        'shortname' => 'local_vesselsync',
        'restrictedusers' => 1,
        'enabled' => 0,
        'downloadfiles' => 0,
        'uploadfiles' => 0,
    ],
];
