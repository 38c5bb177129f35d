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

namespace local_vesselsync;

/**
 * Resolves the keys vessel-sync carries to this Moodle's records, the way its agent and shore
 * do: a course by idnumber, else shortname (hidden courses included); an activity by its
 * course-module idnumber, else MODNAME:NAME; a learner by idnumber, else username. What one
 * web-service call has resolved is kept for the rest of that call.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class resolver {
    /** @var array course key => course record with its activities (->activities), or null */
    private array $courses = [];
    /** @var array learner key => user id, or null */
    private array $users = [];
    /** @var array "userid:courseid" => bool */
    private array $enrolled = [];

    /**
     * The course with this key, with ->activities (activity key => cm_info); null if none.
     *
     * @param string $key idnumber or shortname
     * @return \stdClass|null
     */
    public function course(string $key): ?\stdClass {
        global $DB;
        if (array_key_exists($key, $this->courses)) {
            return $this->courses[$key];
        }
        $course = null;
        if ($key !== '') {
            $found = $DB->get_records_select('course', 'idnumber = :k AND id <> :site',
                ['k' => $key, 'site' => SITEID], 'id', '*', 0, 1);
            $course = reset($found) ?: null;
            if (!$course) {
                $course = $DB->get_record_select('course', 'shortname = :k AND id <> :site',
                    ['k' => $key, 'site' => SITEID]) ?: null;
            }
        }
        if ($course) {
            $course->activities = [];
            $modinfo = get_fast_modinfo($course, -1);
            foreach ($modinfo->get_cms() as $cm) {
                $fallback = $cm->modname . ':' . $cm->name;
                $key2 = (string) $cm->idnumber !== '' ? (string) $cm->idnumber : $fallback;
                $course->activities[$key2] = $cm;
                if (!isset($course->activities[$fallback])) {
                    $course->activities[$fallback] = $cm;
                }
            }
        }
        $this->courses[$key] = $course;
        return $course;
    }

    /**
     * The learner with this key; null if none (deleted accounts are no one).
     *
     * @param string $key idnumber or username
     * @return \stdClass|null id, username, idnumber
     */
    public function user(string $key): ?\stdClass {
        global $DB, $CFG;
        if (array_key_exists($key, $this->users)) {
            return $this->users[$key];
        }
        $user = null;
        if ($key !== '') {
            $found = $DB->get_records('user', ['idnumber' => $key, 'deleted' => 0], 'id',
                'id, username, idnumber', 0, 1);
            $user = reset($found) ?: null;
            if (!$user) {
                $user = $DB->get_record('user', ['username' => $key, 'deleted' => 0,
                    'mnethostid' => $CFG->mnet_localhost_id], 'id, username, idnumber') ?: null;
            }
        }
        $this->users[$key] = $user;
        return $user;
    }

    /**
     * Whether the learner has an enrolment in the course, active or not, whether or not the
     * course is visible.
     *
     * @param int $userid
     * @param int $courseid
     * @return bool
     */
    public function enrolled(int $userid, int $courseid): bool {
        $k = "$userid:$courseid";
        if (!array_key_exists($k, $this->enrolled)) {
            $this->enrolled[$k] = is_enrolled(\context_course::instance($courseid), $userid, '', false);
        }
        return $this->enrolled[$k];
    }
}
